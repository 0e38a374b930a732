"""The slide pipeline: decode and check an image, cut it into tiles, merge detections."""
