"""A small loss / PSNR-over-steps plot drawn with QPainter (no matplotlib needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor(255, 160, 60)
PSNR_COLOR = QColor(90, 200, 120)


class LossPlot(QWidget):
    """Loss (log scale, orange) and PSNR (dB, green) against the training step."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.psnr: list[float] = []
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def clear(self):
        self.steps, self.loss, self.psnr = [], [], []
        self.update()

    def extend(self, rows):
        """Append (step, loss, psnr) rows and repaint."""
        for step, loss, psnr in rows:
            self.steps.append(int(step))
            self.loss.append(float(loss))
            self.psnr.append(float(psnr))
        self.update()

    def _curve(self, xs, ys, rect, log=False):
        pts = [(x, math.log10(y) if log else y) for x, y in zip(xs, ys) if math.isfinite(y) and (y > 0 or not log)]
        if len(pts) < 2:
            return None, None
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        dx, dy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
        poly = QPolygonF(
            [
                QPointF(rect.left() + (x - x0) / dx * rect.width(), rect.bottom() - (y - y0) / dy * rect.height())
                for x, y in pts
            ]
        )
        return poly, (y0, y1)

    def paintEvent(self, event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.rect().adjusted(6, 18, -6, -6)
        p.setPen(QPen(QColor(128, 128, 128), 1))
        p.drawRect(rect)
        if not self.steps:
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "loss / PSNR appear here during training")
            p.end()
            return
        for ys, color, log in ((self.loss, LOSS_COLOR, True), (self.psnr, PSNR_COLOR, False)):
            poly, _ = self._curve(self.steps, ys, rect, log)
            if poly is not None:
                p.setPen(QPen(color, 1.5))
                p.drawPolyline(poly)
        p.setPen(LOSS_COLOR)
        p.drawText(6, 13, f"loss {self.loss[-1]:.3g}")
        p.setPen(PSNR_COLOR)
        p.drawText(self.width() // 2 - 20, 13, f"PSNR {self.psnr[-1]:.1f} dB")
        p.setPen(QColor(160, 160, 160))
        p.drawText(self.width() - 80, 13, f"step {self.steps[-1]}")
        p.end()
