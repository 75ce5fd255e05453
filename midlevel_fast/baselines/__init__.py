"""What the paper is compared with: the whole-image linear probe (``probe``) and class activation maps
(``cam``)."""
