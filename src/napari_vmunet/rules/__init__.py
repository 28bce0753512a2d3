"""Rules shared by checkpoints, inference and training, one home each.

Nothing here imports torch, the checkpoint code or Qt: these are plain
facts about images (what an input must look like, how it is normalised,
how it is tiled), used by every layer above.
"""
