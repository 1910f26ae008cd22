"""Data: joint definitions, pre/post-processing, PoseTrack reading, the built-in sample clip."""
