"""Files in and out: images read into RGB arrays (``image_io``), user text and JSON read with errors that name
the file (``text_input``), and the one atomic write everything else goes through (``files``)."""
