"""Data in: image decoding and resizing (images.py), the data sets and their fixed split
(datasets.py), and the one atomic writer and bounded file reader (fsio.py)."""
