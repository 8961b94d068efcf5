"""Training: the SVI loop over minibatches and truncated-BPTT windows, and what keeps it going.

The trainers (``SVITrainer``, ``TBPTTTrainer``), their batching (whole sequences or stream
windows), the KL schedule over an epoch (warm-up, tempering), optimisers and schedulers,
checkpoints and resuming, the divergence guard and early stopping.
Public names are re-exported by :mod:`bayesrnn.inference`.
"""
