"""Classical codecs a user would pick instead, run at a matched bit rate.

Each codec turns a 3D (Z, Y, X) volume into one self-contained byte stream
(everything needed to decode: shape, dtype, intensity mapping, per-slice
lengths), and back. ``at_bpp`` searches the codec's quality knob by bisection
until the stream is within 2% of a target bpp (8 * stream bytes / voxels; at
most 16 encodes; a result more than 10% away is flagged in the table) and
returns the decoded volume, the byte count and the encode and decode
wall-clock seconds.

- ``x265``: ffmpeg + libx265 (HEVC), Z slices as 12-bit grey frames
  (``-pix_fmt gray12le``), ``-preset medium -tune psnr`` (psycho-visual
  tuning off: +0.5 dB PSNR at equal bits), knob ``-crf``. Intensities are
  mapped linearly from [min, max] to 0..4095; the mapping (two float64) is in
  the stream. Needs the ``ffmpeg`` program (``apt-get install -y ffmpeg``);
  timings include starting the ffmpeg process.
- ``jpeg2k``: OpenJPEG through ``imagecodecs.jpeg2k_encode`` per Z slice,
  intensities mapped to 16 bits, raw J2K codestreams, knob = OpenJPEG's
  target PSNR (dB, per slice). Each slice costs ~150 bytes of headers, so on
  small slices low rates are out of reach (reported, not hidden).
- ``jpegxl``: libjxl through ``imagecodecs.jpegxl_encode`` per Z slice,
  intensities mapped to 16 bits, effort 7 (libjxl's default), knob = the
  butteraugli ``distance`` (0.01-25, bisected in log space); each slice is a
  bare JPEG XL codestream behind a 4-byte length.
- ``sz3``: ``imagecodecs.sz3_encode`` on the float32 volume, knob = absolute
  error bound (original units).
- ``zfp``: ``imagecodecs.zfp_encode`` fixed-accuracy mode on the float32
  volume, knob = tolerance (original units); ZFP's own header is included.

Decoded volumes come back in the original dtype (integers rounded and
clipped), as a user of the codec would get them.

Run alone: ``python benchmarks/codec_baselines.py --volumes purkinje nuclei --bpp 0.073 0.3``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

#: accept a stream whose bpp is within this fraction of the target
BPP_TOLERANCE = 0.10
#: but keep bisecting (up to ``max_encodes``) until this close, for a fairer match
BPP_AIM = 0.02

# -- stream header: shape, dtype and the linear intensity mapping ------------------------

_HEADER = struct.Struct("<3I4sdd")  # Z, Y, X, dtype string (e.g. b"<f4\0"), lo, hi


def _pack_header(shape, dtype: np.dtype, lo: float, hi: float) -> bytes:
    return _HEADER.pack(*shape, np.dtype(dtype).str.encode().ljust(4, b"\0"), lo, hi)


def _unpack_header(stream: bytes):
    z, y, x, dt, lo, hi = _HEADER.unpack_from(stream)
    return (z, y, x), np.dtype(dt.rstrip(b"\0").decode()), lo, hi, stream[_HEADER.size:]


def _to_levels(volume: np.ndarray, levels: int) -> tuple[np.ndarray, float, float]:
    lo, hi = float(volume.min()), float(volume.max())
    span = hi - lo if hi > lo else 1.0
    q = np.rint((volume.astype(np.float64) - lo) * (levels / span))
    return q.astype(np.uint16), lo, hi


def _from_levels(q: np.ndarray, levels: int, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return _cast(lo + q.astype(np.float64) * (span / levels), dtype)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values -> ``dtype`` (round and clip for integers)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)


@dataclass
class Codec:
    """A codec with one quality knob; bytes grow with the knob if ``increasing``."""

    name: str
    knob_name: str
    knob_lo: float
    knob_hi: float
    increasing: bool  # stream size grows as the knob grows
    log_knob: bool  # bisect the knob in log space

    def available(self) -> str | None:
        """None if usable, else the reason it is not."""
        return None

    def encode(self, volume: np.ndarray, knob: float) -> bytes:
        raise NotImplementedError

    def decode(self, stream: bytes) -> np.ndarray:
        raise NotImplementedError


class X265(Codec):
    LEVELS = 4095

    def __init__(self, preset: str = "medium", tune: str | None = "psnr"):
        super().__init__("x265", "crf", 0.0, 51.0, increasing=False, log_knob=False)
        self.preset = preset
        self.tune = tune

    def available(self):
        return None if shutil.which("ffmpeg") else "ffmpeg not found (apt-get install -y ffmpeg)"

    def encode(self, volume, knob):
        q, lo, hi = _to_levels(volume, self.LEVELS)
        z, y, x = volume.shape
        pad = (0, y % 2), (0, x % 2)  # keep frame sizes even
        frames = np.pad(q, ((0, 0), *pad), mode="edge") if any(p[1] for p in pad) else q
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray12le",
            "-s", f"{frames.shape[2]}x{frames.shape[1]}", "-r", "25", "-i", "-",
            "-c:v", "libx265", "-preset", self.preset, *(["-tune", self.tune] if self.tune else []),
            "-crf", f"{knob:.3f}",
            "-x265-params", "log-level=error", "-f", "hevc", "-",
        ]
        proc = subprocess.run(cmd, input=frames.astype("<u2").tobytes(), capture_output=True)
        if proc.returncode:
            raise RuntimeError(f"ffmpeg x265 encode failed: {proc.stderr.decode(errors='replace')[-500:]}")
        return _pack_header(volume.shape, volume.dtype, lo, hi) + proc.stdout

    def decode(self, stream):
        shape, dtype, lo, hi, payload = _unpack_header(stream)
        z, y, x = shape
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "hevc", "-i", "-",
            "-f", "rawvideo", "-pix_fmt", "gray12le", "-",
        ]
        proc = subprocess.run(cmd, input=payload, capture_output=True)
        if proc.returncode:
            raise RuntimeError(f"ffmpeg x265 decode failed: {proc.stderr.decode(errors='replace')[-500:]}")
        py, px = y + y % 2, x + x % 2
        frames = np.frombuffer(proc.stdout, "<u2").reshape(z, py, px)[:, :y, :x]
        return _from_levels(frames, self.LEVELS, lo, hi, dtype)


class Jpeg2k(Codec):
    LEVELS = 65535

    def __init__(self):
        super().__init__("jpeg2k", "psnr_target", 15.0, 90.0, increasing=True, log_knob=False)

    def available(self):
        import imagecodecs

        return None if imagecodecs.JPEG2K.available else "imagecodecs built without JPEG 2000"

    def encode(self, volume, knob):
        import imagecodecs

        q, lo, hi = _to_levels(volume, self.LEVELS)
        parts = [_pack_header(volume.shape, volume.dtype, lo, hi)]
        for plane in q:
            # raw J2K codestream: the JP2 box wrapper would add 85 bytes per slice
            cs = imagecodecs.jpeg2k_encode(plane, level=float(knob), codecformat="J2K", numthreads=1)
            parts.append(struct.pack("<I", len(cs)))
            parts.append(bytes(cs))
        return b"".join(parts)

    def decode(self, stream):
        import imagecodecs

        shape, dtype, lo, hi, payload = _unpack_header(stream)
        out = np.empty(shape, np.uint16)
        pos = 0
        for z in range(shape[0]):
            (n,) = struct.unpack_from("<I", payload, pos)
            out[z] = imagecodecs.jpeg2k_decode(payload[pos + 4: pos + 4 + n], numthreads=1)
            pos += 4 + n
        return _from_levels(out, self.LEVELS, lo, hi, dtype)


class JpegXl(Codec):
    LEVELS = 65535

    def __init__(self, effort: int = 7):
        super().__init__("jpegxl", "distance", 0.01, 25.0, increasing=False, log_knob=True)
        self.effort = effort

    def available(self):
        import imagecodecs

        return None if imagecodecs.JPEGXL.available else "imagecodecs built without JPEG XL"

    def encode(self, volume, knob):
        import imagecodecs

        q, lo, hi = _to_levels(volume, self.LEVELS)
        parts = [_pack_header(volume.shape, volume.dtype, lo, hi)]
        for plane in q:
            cs = imagecodecs.jpegxl_encode(plane, distance=float(knob), effort=self.effort, numthreads=1)
            parts.append(struct.pack("<I", len(cs)))
            parts.append(bytes(cs))
        return b"".join(parts)

    def decode(self, stream):
        import imagecodecs

        shape, dtype, lo, hi, payload = _unpack_header(stream)
        out = np.empty(shape, np.uint16)
        pos = 0
        for z in range(shape[0]):
            (n,) = struct.unpack_from("<I", payload, pos)
            out[z] = imagecodecs.jpegxl_decode(payload[pos + 4: pos + 4 + n], numthreads=1)
            pos += 4 + n
        return _from_levels(out, self.LEVELS, lo, hi, dtype)


class Sz3(Codec):
    def __init__(self):
        super().__init__("sz3", "abs_error", 1e-3, 1e4, increasing=False, log_knob=True)

    def available(self):
        import imagecodecs

        return None if imagecodecs.SZ3.available else "imagecodecs built without SZ3"

    def encode(self, volume, knob):
        import imagecodecs

        data = np.ascontiguousarray(volume, dtype=np.float32)
        payload = imagecodecs.sz3_encode(data, mode="abs", abs=float(knob))
        return _pack_header(volume.shape, volume.dtype, 0.0, 0.0) + bytes(payload)

    def decode(self, stream):
        import imagecodecs

        shape, dtype, _, _, payload = _unpack_header(stream)
        return _cast(imagecodecs.sz3_decode(payload, shape=shape, dtype=np.float32), dtype)


class Zfp(Codec):
    def __init__(self):
        super().__init__("zfp", "tolerance", 1e-3, 1e5, increasing=False, log_knob=True)

    def available(self):
        import imagecodecs

        return None if imagecodecs.ZFP.available else "imagecodecs built without ZFP"

    def encode(self, volume, knob):
        import imagecodecs

        data = np.ascontiguousarray(volume, dtype=np.float32)
        payload = imagecodecs.zfp_encode(data, float(knob), mode="accuracy")  # header: shape, dtype, mode
        return np.dtype(volume.dtype).str.encode().ljust(4, b"\0") + bytes(payload)

    def decode(self, stream):
        import imagecodecs

        dtype = np.dtype(stream[:4].rstrip(b"\0").decode())
        return _cast(imagecodecs.zfp_decode(stream[4:]), dtype)


CODECS = {c.name: c for c in (X265(), Jpeg2k(), JpegXl(), Sz3(), Zfp())}


# -- rate search -------------------------------------------------------------------------------


@dataclass
class Encoded:
    codec: str
    knob: float
    stream: bytes
    bpp: float
    encode_s: float
    n_encodes: int
    within_tolerance: bool


def at_bpp(codec: Codec, volume: np.ndarray, target_bpp: float, tol: float = BPP_TOLERANCE,
           aim: float = BPP_AIM, max_encodes: int = 16) -> Encoded:
    """Bisect ``codec``'s knob until the stream's bpp is within ``aim`` of ``target_bpp``.

    Stops early at ``max_encodes``; the result counts as matched
    (``within_tolerance``) if it is within ``tol``.

    If the target cannot be reached inside the knob's range, the closest stream
    is returned with ``within_tolerance=False``.
    """
    n_vox = volume.size
    tried: list[tuple[float, float, bytes, float]] = []  # (|log ratio|, knob, stream, seconds)

    def trial(knob: float) -> float:
        t0 = time.perf_counter()
        stream = codec.encode(volume, knob)
        seconds = time.perf_counter() - t0
        bpp = 8.0 * len(stream) / n_vox
        tried.append((abs(math.log(bpp / target_bpp)), knob, stream, seconds))
        return bpp

    def to_t(k):
        return math.log(k) if codec.log_knob else k

    def from_t(t):
        return math.exp(t) if codec.log_knob else t

    lo, hi = to_t(codec.knob_lo), to_t(codec.knob_hi)
    b_lo, b_hi = trial(from_t(lo)), trial(from_t(hi))

    def sign(bpp):  # > 0 when the knob must move towards "hi"
        too_big = bpp > target_bpp
        return -1 if too_big == codec.increasing else 1

    if sign(b_lo) == sign(b_hi):  # target outside the reachable range
        pass
    else:
        for _ in range(max_encodes - 2):
            best_bpp = 8.0 * len(min(tried, key=lambda r: r[0])[2]) / n_vox
            if abs(best_bpp / target_bpp - 1) <= aim:
                break
            mid = 0.5 * (lo + hi)
            b_mid = trial(from_t(mid))
            if sign(b_mid) > 0:
                lo = mid
            else:
                hi = mid
    score, knob, stream, seconds = min(tried, key=lambda r: r[0])
    bpp = 8.0 * len(stream) / n_vox
    return Encoded(codec.name, knob, stream, bpp, seconds, len(tried), abs(bpp / target_bpp - 1) <= tol)


def run_codec(codec: Codec, volume_name: str, volume: np.ndarray, target_bpp: float) -> _common.Result:
    """Encode at ``target_bpp``, decode (timed) and score with ``napari_volmicro.metrics``."""
    enc = at_bpp(codec, volume, target_bpp)
    t0 = time.perf_counter()
    decoded = codec.decode(enc.stream)
    decode_s = time.perf_counter() - t0
    note = "" if enc.within_tolerance else f"target not reachable (closest {enc.bpp:.4f} bpp)"
    return _common.measure(
        volume_name, codec.name, volume, decoded, len(enc.stream), target_bpp=target_bpp,
        encode_s=enc.encode_s, decode_s=decode_s, knob=f"{codec.knob_name}={enc.knob:.4g}", note=note,
        extra={"n_encodes": enc.n_encodes},
    )


def add_x265_arguments(parser) -> None:
    parser.add_argument("--x265-preset", default="medium", help="x265 preset (default: medium)")
    parser.add_argument("--x265-tune", default="psnr", help="x265 tune, 'none' for x265's default (default: psnr)")


def configure_x265(args) -> None:
    CODECS["x265"].preset = args.x265_preset
    CODECS["x265"].tune = None if args.x265_tune in ("", "none") else args.x265_tune


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", nargs="+", default=["purkinje", "nuclei"],
                        help=f"names ({', '.join(_common.VOLUMES)}) or paths")
    parser.add_argument("--bpp", nargs="+", type=float, default=[0.073, 0.3])
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=list(CODECS))
    add_x265_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON line with all results")
    args = parser.parse_args(argv)
    configure_x265(args)

    results = []
    print(_common.TABLE_HEADER, flush=True)
    for vname in args.volumes:
        volume, _ = _common.load_volume(vname)
        for name in args.codecs:
            codec = CODECS[name]
            reason = codec.available()
            if reason:
                print(f"{vname:<9} {name:<16} skipped: {reason}", flush=True)
                continue
            for target in args.bpp:
                r = run_codec(codec, vname, volume, target)
                results.append(r)
                print(_common.table_row(r), flush=True)
    if args.json:
        _common.print_json_line({"results": [r.as_json() for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
