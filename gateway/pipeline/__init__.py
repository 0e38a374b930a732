"""The image pipeline: decode and check an image, cut it into tiles (or send it whole),
merge detections."""
