"""Patch features from the frozen trunk: the paper's multi-scale grid (``grid``), the dense sliding window
(``dense``), batched crops (``batched``), the image size limits (``limits``), and the one entry point of both
(``patch_features``). Nothing here knows a head."""
