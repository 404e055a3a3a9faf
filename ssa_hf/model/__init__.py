"""The model: everything `save_pretrained` copies next to the weights as remote code, in one flat folder.

- `configuration_ssa.py`: `SSAConfig`, the one documented config of every encoder/decoder pair, and the config
  derivations (labels, from a SegFormer or an UperNet);
- `modeling_ssa.py`: `SSAForSemanticSegmentation`, the one model class for every pair;
- `classifier_ssa.py`: the SSA classifier, the paper's steps as named methods;
- `decoders_ssa.py`: the decoders that feed it, one class each;
- `loss_ssa.py`, `ops_ssa.py`: the training losses, and the shared tensor operations;
- `image_processing_ssa.py`: the preprocessing contract saved with every model.

Encoder families that transformers does not have come as configuration/modeling pairs of their own beside these.
The files depend on torch and transformers only and import each other relatively (one level), so that a saved folder
loads with `trust_remote_code=True` where this package is not installed. The workflows that use the model (data,
training, evaluation, the command line) live one level up, in `ssa_hf`.
"""
