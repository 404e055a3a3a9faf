"""A plain, loop-based reference of SSA written from docs/method.md, sections 2-4, for small cases only.

It deliberately follows the method's set notation (loops over images, groups, classes and pixels, class sets built with
Python sets) and uses OpenCV for the boundary mask, as the original code does. It shares no code with `ssa_hf`: it only
reads the classifier's parameters. Detaches follow the table of docs/method.md, section 5.
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-12


def unit(v):
    return v / (v.norm() + EPS)


def mlp(fusion, x):
    """Linear(2C -> C', no bias) -> ReLU -> Linear(C' -> C) on a single vector."""
    hidden = torch.relu(fusion.reduce.weight @ x)
    return fusion.expand.weight @ hidden + fusion.expand.bias


def depthwise_conv3x3(conv, feats):
    """P_f[b, c, i, j] = bias[c] + sum_{di, dj} w[c, di, dj] * F[b, c, i + di - 1, j + dj - 1], zero padding."""
    batch, channels, height, width = feats.shape
    out = conv.bias[None, :, None, None].expand(batch, channels, height, width).clone()
    padded = F.pad(feats, (1, 1, 1, 1))
    for di in range(3):
        for dj in range(3):
            out = out + conv.weight[:, 0, di, dj][None, :, None, None] * padded[:, :, di : di + height, dj : dj + width]
    return out


def opencv_boundary(label_map_small, frame=6, dilation=3):
    """Spec 4.4 with OpenCV: Canny(0.1, 0.2) on uint8 labels, zero a frame, dilate, binarise."""
    edge = cv2.Canny(label_map_small.astype(np.uint8), 0.1, 0.2)
    height, width = edge.shape
    framed = np.zeros_like(edge)
    framed[frame : height - frame, frame : width - frame] = edge[frame : height - frame, frame : width - frame]
    dilated = cv2.dilate(framed, np.ones((dilation, dilation), np.uint8), iterations=1)
    return (dilated > 50).astype(np.float64)


def legacy_nearest(labels, height, width):
    """Y_small[b, i, j] = Y[b, floor(i * H / h), floor(j * W / w)]."""
    full_h, full_w = labels.shape[-2:]
    rows = [int(np.floor(i * full_h / height)) for i in range(height)]
    cols = [int(np.floor(j * full_w / width)) for j in range(width)]
    return labels[:, rows][:, :, cols]


def reference_classifier(clf, feats, coarse_logits, labels_small=None, group_size=None, ignore_index=255, scale=15.0):
    """Student (section 2) and, with labels, teacher (section 3) outputs for one SSAClassifier's parameters."""
    batch, channels, height, width = feats.shape
    num_classes = clf.weight.shape[0]
    n_pix = height * width
    wc = clf.weight[:, :, 0, 0]
    basis = clf.class_position_basis.weight
    pos = depthwise_conv3x3(clf.position_encoder, feats)
    f_flat, p_flat = feats.reshape(batch, channels, n_pix), pos.reshape(batch, channels, n_pix)
    m_flat = coarse_logits.reshape(batch, num_classes, n_pix)
    out = {"position": pos}

    spatial_centres = torch.zeros(batch, num_classes, channels, dtype=feats.dtype)
    semantic_centres = torch.zeros(batch, num_classes, channels, dtype=feats.dtype)
    for b in range(batch):
        for k in range(num_classes):
            a = torch.exp(m_flat[b, k] - m_flat[b, k].max())
            a = a / a.sum()  # softmax over pixels
            spatial_centres[b, k] = sum(a[n] * p_flat[b, :, n] for n in range(n_pix))
        q = torch.softmax(m_flat[b], dim=0)  # softmax over classes, per pixel
        for k in range(num_classes):
            weighted = sum(q[k, n] * f_flat[b, :, n] for n in range(n_pix))
            semantic_centres[b, k] = weighted / (q[k].sum() + EPS)
    spatial_prototypes = torch.stack(
        [torch.stack([mlp(clf.spatial_fusion, torch.cat([basis[k], spatial_centres[b, k]])) for k in range(num_classes)])
         for b in range(batch)]
    )
    semantic_prototypes = torch.stack(
        [torch.stack([mlp(clf.semantic_fusion, torch.cat([semantic_centres[b, k], wc[k]])) for k in range(num_classes)])
         for b in range(batch)]
    )

    def cosine_logits(projection, prototypes):
        logits = torch.zeros(batch, num_classes, n_pix, dtype=feats.dtype)
        for b in range(batch):
            u = f_flat[b] + p_flat[b]
            for k in range(num_classes):
                v = unit(projection.weight @ prototypes[b, k])
                for n in range(n_pix):
                    logits[b, k, n] = scale * torch.dot(unit(u[:, n]), v)
        return logits.reshape(batch, num_classes, height, width)

    out.update(
        spatial_centres=spatial_centres,
        semantic_centres=semantic_centres,
        spatial_prototypes=spatial_prototypes,
        semantic_prototypes=semantic_prototypes,
        logits=cosine_logits(clf.prototype_projection, semantic_prototypes + spatial_prototypes),
    )
    if labels_small is None:
        return out

    group_size = group_size or batch
    groups = [list(range(start, min(start + group_size, batch))) for start in range(0, batch, group_size)]
    y = labels_small.reshape(batch, n_pix)
    teacher_semantic_centres = torch.zeros(len(groups), num_classes, channels, dtype=feats.dtype)
    teacher_group_prototypes = []
    for g, members in enumerate(groups):
        present = {int(v) for b in members for v in y[b].tolist() if v != ignore_index}
        rows = []
        for k in range(num_classes):
            if k in present:
                pixels = [(b, n) for b in members for n in range(n_pix) if int(y[b, n]) == k]
                centre = sum(f_flat[b, :, n] for b, n in pixels) / (len(pixels) + EPS)
            else:
                centre = wc[k].detach()
            teacher_semantic_centres[g, k] = centre
            rows.append(mlp(clf.teacher_semantic_fusion, torch.cat([centre, wc[k]])))
        teacher_group_prototypes.append(torch.stack(rows))
    teacher_semantic_prototypes = torch.stack([teacher_group_prototypes[b // group_size] for b in range(batch)])

    teacher_spatial_centres = torch.zeros(batch, num_classes, channels, dtype=feats.dtype)
    teacher_spatial_rows = []
    for b in range(batch):
        present = {int(v) for v in y[b].tolist() if v != ignore_index}
        rows = []
        for k in range(num_classes):
            if k in present:
                pixels = [n for n in range(n_pix) if int(y[b, n]) == k]
                centre = sum(p_flat[b, :, n] for n in pixels) / (len(pixels) + EPS)
            else:
                centre = basis[k].detach()
            teacher_spatial_centres[b, k] = centre
            rows.append(mlp(clf.teacher_spatial_fusion, torch.cat([centre, basis[k]])))
        teacher_spatial_rows.append(torch.stack(rows))
    teacher_spatial_prototypes = torch.stack(teacher_spatial_rows)
    out.update(
        teacher_semantic_centres=teacher_semantic_centres,
        teacher_spatial_centres=teacher_spatial_centres,
        teacher_semantic_prototypes=teacher_semantic_prototypes,
        teacher_spatial_prototypes=teacher_spatial_prototypes,
        teacher_logits=cosine_logits(
            clf.teacher_prototype_projection, teacher_semantic_prototypes + teacher_spatial_prototypes
        ),
    )
    return out


def up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def reference_losses(
    outputs, coarse_logits, labels, group_size=None, ignore_index=255, scale=15.0, mix=0.5, frame=6, dilation=3,
    weights=None,
):
    """The eight terms of section 4 (weighted; defaults 1, 1, 1, 1, 1, 1, 10, 0.4) from reference outputs."""
    weights = weights or {
        "main": 1.0, "coarse": 1.0, "teacher": 1.0, "response_distillation": 1.0, "dice_student": 1.0,
        "dice_teacher": 1.0, "semantic_distillation": 10.0, "spatial_distillation": 0.4,
    }
    student, teacher = outputs["logits"], outputs["teacher_logits"]
    batch, num_classes, height, width = student.shape
    full_h, full_w = labels.shape[-2:]
    group_size = group_size or batch
    groups = [list(range(start, min(start + group_size, batch))) for start in range(0, batch, group_size)]
    terms = {}

    def pixel_nll(logits_full, b, i, j):
        return -torch.log_softmax(logits_full[b, :, i, j], dim=0)[int(labels[b, i, j])]

    up_student, up_teacher, up_coarse = (up(x, (full_h, full_w)) for x in (student, teacher, coarse_logits))
    valid_pixels = [(b, i, j) for b in range(batch) for i in range(full_h) for j in range(full_w)
                    if int(labels[b, i, j]) != ignore_index]
    # L_main: mean over all B*H*W pixels, ignored ones counted in the denominator.
    terms["main"] = sum(pixel_nll(up_student, b, i, j) for b, i, j in valid_pixels) / (batch * full_h * full_w)

    def grouped_ce(logits_full):
        group_values = []
        for members in groups:
            pixels = [(b, i, j) for b, i, j in valid_pixels if b in members]
            group_values.append(sum(pixel_nll(logits_full, *p) for p in pixels) / len(pixels) if pixels else
                                torch.zeros((), dtype=student.dtype))
        return sum(group_values) / len(groups)

    terms["coarse"] = grouped_ce(up_coarse)
    terms["teacher"] = grouped_ce(up_teacher)

    # L_rd at feature resolution.
    y_small = legacy_nearest(labels, height, width)
    student_log_probs = torch.log_softmax(student, dim=1)
    teacher_probs = torch.softmax(teacher.detach(), dim=1)
    group_losses = []
    for members in groups:
        present = sorted({int(v) for b in members for v in y_small[b].flatten().tolist() if v != ignore_index})
        boundaries = {b: opencv_boundary(np.where(y_small[b].numpy() == ignore_index, 255, y_small[b].numpy()),
                                         frame, dilation) for b in members}
        class_losses = []
        for k in present:
            sums = torch.zeros(4, dtype=student.dtype)
            for b in members:
                for i in range(height):
                    for j in range(width):
                        if int(y_small[b, i, j]) != k:
                            continue
                        t = teacher_probs[b, :, i, j]
                        one_hot = torch.zeros(num_classes, dtype=student.dtype)
                        one_hot[k] = 1
                        target = (1 - mix) * t + mix * one_hot
                        ce = -(target * student_log_probs[b, :, i, j]).sum()
                        entropy = -(t * torch.log(t + EPS)).sum()
                        if boundaries[b][i, j]:
                            sums = sums + torch.stack([ce * entropy, entropy, ce * 0, entropy * 0])
                        else:
                            sums = sums + torch.stack([ce * 0, entropy * 0, ce * entropy, entropy])
            a_k = sums[0] / (sums[1] + EPS)
            c_k = sums[2] / (sums[3] + EPS)
            class_losses.append((a_k + c_k) / 2)
        group_losses.append(sum(class_losses) / (len(present) + EPS) if present else torch.zeros((), dtype=student.dtype))
    terms["response_distillation"] = sum(group_losses) / len(groups)

    def dice(logits_full):
        total, count = torch.zeros((), dtype=student.dtype), 0
        for b in range(batch):
            for k in sorted({int(v) for v in labels[b].flatten().tolist() if v != ignore_index}):
                p = torch.sigmoid(logits_full[b, k]).flatten()
                t = (labels[b] == k).flatten().to(p.dtype)
                total = total + 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
                count += 1
        return total / max(count, 1)

    terms["dice_student"] = dice(up_student)
    terms["dice_teacher"] = dice(up_teacher)

    def relation(prototypes):
        rows = torch.stack([unit(prototypes[k]) for k in range(num_classes)])
        return torch.softmax(scale * rows @ rows.detach().T, dim=1)

    excess = torch.zeros((), dtype=student.dtype)
    for b in range(batch):
        r_s = relation(outputs["semantic_prototypes"][b])
        r_t = relation(outputs["teacher_semantic_prototypes"][b].detach())
        for k in range(num_classes):
            for j in range(num_classes):
                if k != j:
                    excess = excess + torch.clamp(r_s[k, j] - r_t[k, j], min=0)
    terms["semantic_distillation"] = excess / (batch * num_classes)

    spatial = torch.zeros((), dtype=student.dtype)
    for b in range(batch):
        for k in range(num_classes):
            t = torch.softmax(outputs["teacher_spatial_prototypes"][b, k].detach(), dim=0)
            spatial = spatial - (t * torch.log_softmax(outputs["spatial_prototypes"][b, k], dim=0)).sum()
    terms["spatial_distillation"] = spatial / (batch * num_classes)
    return {name: weights[name] * value for name, value in terms.items()}
