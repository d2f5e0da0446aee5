"""The agent: FPAC's feature points, encoders, networks and SAC update (Sec. III) on training
batches, the update modes of the ablations, the learner's speed settings, the exported policy the
actors run, and the handcrafted and pretrained keypoint baselines. Knows nothing of the wire."""
