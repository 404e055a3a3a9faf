"""The SSA teacher and losses written the way the official code computes them, for speed comparisons only.

Per-class Python loops with `.unique()` host syncs, OpenCV boundary masks per image on the CPU, and every term on
logits upsampled to the full label size with `F.interpolate` + `F.cross_entropy`. To keep the comparison conservative
it leaves out the official code's dead work (the discarded focal loss, repeated upsamplings of the same tensor).
The benchmark checks that it returns the same numbers as `ssa_hf`.
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-12


def _mlp(fusion, first, second):
    return fusion.expand(torch.relu(fusion.reduce(torch.cat([first, second], dim=-1))))


def _cosine(scale, pixels, prototypes):
    pixels = pixels / (pixels.norm(dim=1, keepdim=True) + EPS)
    prototypes = prototypes / (prototypes.norm(dim=-1, keepdim=True) + EPS)
    return scale * torch.einsum("bcn,bkc->bkn", pixels, prototypes)


def teacher_loop(clf, features, position, labels_small):
    """Ground-truth-guided teacher of the official head (whole batch = one group)."""
    batch, channels, height, width = features.shape
    num_classes = clf.weight.shape[0]
    wc = clf.weight[:, :, 0, 0]
    basis = clf.class_position_basis.weight
    f_flat, p_flat = features.flatten(2), position.flatten(2)
    y = labels_small.flatten(1)
    centres = wc.detach().clone()
    for k in y.unique().tolist():
        if k == 255:
            continue
        mask = (y == k).float()  # (B, N)
        mean = (f_flat * mask[:, None]).sum((0, 2)) / (mask.sum() + EPS)
        one_hot = torch.zeros(num_classes, 1, device=features.device)
        one_hot[k] = 1
        centres = centres * (1 - one_hot) + mean[None] * one_hot
    semantic = _mlp(clf.teacher_semantic_fusion, centres, wc)[None].expand(batch, -1, -1)
    spatial_rows = []
    for b in range(batch):
        pos_centres = basis.detach().clone()
        for k in y[b].unique().tolist():
            if k == 255:
                continue
            mask = (y[b] == k).float()
            mean = (p_flat[b] * mask[None]).sum(1) / (mask.sum() + EPS)
            one_hot = torch.zeros(num_classes, 1, device=features.device)
            one_hot[k] = 1
            pos_centres = pos_centres * (1 - one_hot) + mean[None] * one_hot
        spatial_rows.append(_mlp(clf.teacher_spatial_fusion, pos_centres, basis))
    spatial = torch.stack(spatial_rows)
    prototypes = clf.teacher_prototype_projection(semantic + spatial)
    logits = _cosine(clf.logit_scale, f_flat + p_flat, prototypes).view(batch, num_classes, height, width)
    return logits, semantic, spatial


def _boundary(label_map):
    edges = []
    for array in label_map.cpu().numpy().astype(np.uint8):
        edge = cv2.Canny(array, 0.1, 0.2)
        framed = np.zeros_like(edge)
        framed[6:-6, 6:-6] = edge[6:-6, 6:-6]
        edges.append(cv2.dilate(framed, np.ones((3, 3), np.uint8)) > 50)
    return torch.from_numpy(np.stack(edges)).to(label_map.device, torch.float64)


def _dice(logits_full, labels):
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        classes = [k for k in labels[b].unique().tolist() if k != 255]
        if not classes:
            continue
        targets = torch.stack([(labels[b] == k).float() for k in classes]).flatten(1)
        probs = logits_full[b, classes].sigmoid().flatten(1)
        total = total + (1 - (2 * (probs * targets).sum(1) + 1) / (probs.sum(1) + targets.sum(1) + 1)).sum()
        count += len(classes)
    return total / max(count, 1)


def losses_loop(outputs, teacher_logits, teacher_semantic, teacher_spatial, labels, scale=15.0):
    """The eight weighted terms, official style. `outputs` is an `SSAClassifierOutput` of the student."""
    logits, coarse = outputs.logits, outputs.coarse_logits
    size = labels.shape[-2:]
    up = {name: F.interpolate(x, size=size, mode="bilinear", align_corners=True)
          for name, x in (("student", logits), ("coarse", coarse), ("teacher", teacher_logits))}
    terms = {
        "main": F.cross_entropy(up["student"], labels, ignore_index=255, reduction="sum") / labels.numel(),
        "coarse": F.cross_entropy(up["coarse"], labels, ignore_index=255),
        "teacher": F.cross_entropy(up["teacher"], labels, ignore_index=255),
        "dice_student": _dice(up["student"], labels),
        "dice_teacher": _dice(up["teacher"], labels),
    }
    small = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    teacher_probs = teacher_logits.detach().softmax(1)
    one_hot = F.one_hot(torch.where(small == 255, 0, small), logits.shape[1]).permute(0, 3, 1, 2).float()
    target = 0.5 * teacher_probs + 0.5 * one_hot
    per_pixel = -(target * logits.log_softmax(1)).sum(1)
    entropy = -(teacher_probs * torch.log(teacher_probs + EPS)).sum(1) * (small != 255)
    boundary = _boundary(small)
    class_terms = []
    classes = [k for k in small.unique().tolist() if k != 255]
    for k in classes:
        mask = (small == k).double()
        a = (per_pixel * entropy * mask * boundary).sum() / ((entropy * mask * boundary).sum() + EPS)
        c = (per_pixel * entropy * mask * (1 - boundary)).sum() / ((entropy * mask * (1 - boundary)).sum() + EPS)
        class_terms.append((a + c) / 2)
    terms["response_distillation"] = (sum(class_terms) / (len(classes) + EPS)).float() if classes else logits.sum() * 0

    def relation(prototypes):
        unit = prototypes / (prototypes.norm(dim=-1, keepdim=True) + EPS)
        return torch.softmax(scale * unit @ unit.detach().transpose(1, 2), dim=-1)

    batch, num_classes = logits.shape[:2]
    eye = torch.eye(num_classes, device=logits.device)
    excess = torch.relu((relation(outputs.semantic_prototypes) - relation(teacher_semantic.detach())) * (1 - eye))
    terms["semantic_distillation"] = 10 * excess.sum() / (batch * num_classes)
    spatial = -(teacher_spatial.detach().softmax(-1) * outputs.spatial_prototypes.log_softmax(-1)).sum()
    terms["spatial_distillation"] = 0.4 * spatial / (batch * num_classes)
    return terms
