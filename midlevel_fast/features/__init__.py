"""Patch features from the frozen trunk: the paper's multi-scale grid (``grid``), the dense sliding window
(``dense``), batched crops (``batched``), the image size limits (``limits``), the one entry point of both
(``patch_features``), and candidate boxes for a detector on the dense lattice (``proposals``). Nothing here knows a
head."""
