"""Pictures: heat-map overlays of output maps with their detections and points, and their file names
(``overlay``)."""
