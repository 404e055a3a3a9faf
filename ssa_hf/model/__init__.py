"""The model: everything `save_pretrained` copies next to the weights as remote code, in one flat folder.

- `configuration_ssa.py`: `SSAConfig`, the one documented config of every encoder/decoder pair, and the config
  derivations (labels, from a SegFormer or an UperNet);
- `modeling_ssa.py`: `SSAForSemanticSegmentation`, the one model class for every pair;
- `classifier_ssa.py`: the SSA classifier, the paper's steps as named methods;
- `decoders_ssa.py`: the decoders that feed it, one class each; `decoders_ocr.py`: OCRNet's cascade;
  `decoders_transformers.py`: the heads of transformers' DPT, MobileViT and MobileNetV2 segmenters;
- `encoders_transformers.py`: the encoders of transformers' own segmenters (BEiT, Data2VecVision, DPT, MobileViT(V2),
  MobileNetV2) as those segmenters use them (`from_transformers`);
- `loss_ssa.py`, `ops_ssa.py`: the training losses, and the shared tensor operations;
- `image_processing_ssa.py`: the preprocessing contract saved with every model.

Encoder families that transformers does not have (SeaFormer, MSCAN, EfficientFormerV2, AFFormer, HRNet) come as
configuration/modeling pairs of their own beside these.
The files depend on torch and transformers only and import each other relatively (one level), so that a saved folder
loads with `trust_remote_code=True` where this package is not installed. The workflows that use the model (data,
training, evaluation, the command line) live one level up, in `ssa_hf`.
"""
