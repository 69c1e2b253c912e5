"""core: what every phase shares, importing nothing else of detflow.

errors (the exception types and config checks), options (``ConfigOptions``: a config
section into a typed, validated, frozen options object), files (atomic writes, JSON), images
(safe opening under a pixel limit), boxes (``xyxy`` pixels, COCO ``xywh``, YOLO normalized
``cxcywh``), draw (captioned boxes, image grids), faults (kill points for crash tests) and
seeding (reproducible Python/NumPy/torch random state); sliced inference on large images:
tile_grid (the windows), tile_settings (``TileSettings``, what a model carries), slicing
(``sliced_predict``) and tile_merge (NMS or WBF across tiles), NumPy only.
"""
