"""How a model is run over data, shared by training and prediction.

A stream cut into truncated-BPTT windows with the state carried between them, and the
``torch.distributed`` process group that several processes share. Nothing here knows of guides
or optimisers. Public names are re-exported by :mod:`bayesrnn.inference`.
"""
