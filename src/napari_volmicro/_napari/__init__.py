"""The napari plugin (the only part of the package that imports napari or Qt).

Widgets: ``_compress.CompressWidget`` (train live) and ``_browse.BrowseWidget``
(decode what is on screen, ellipsoid overlay); ``_reader``/``_writer`` for
``.vmg``; ``_sample_data``. Contributions are declared in ``napari.yaml``.
"""
