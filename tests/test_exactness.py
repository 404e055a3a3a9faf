"""SSA classifier and losses against the loop-based reference (tests/ssa_reference.py), and the
properties of docs/method.md, section 5."""

import pytest
import torch
from ssa_reference import legacy_nearest, opencv_boundary, reference_classifier, reference_losses

from ssa_hf import SSAClassifier, SSALoss
from ssa_hf.ops_ssa import cosine_logits, downsample_labels

WEIGHTS = {
    "main": 1.0, "coarse": 1.0, "teacher": 1.0, "response_distillation": 1.0, "dice_student": 1.0,
    "dice_teacher": 1.0, "semantic_distillation": 10.0, "spatial_distillation": 0.4,
}
TEACHER_MODULES = ("teacher_semantic_fusion", "teacher_spatial_fusion", "teacher_prototype_projection")


def make_case(batch=5, channels=8, num_classes=6, height=14, width=15, seed=0, dtype=torch.float64):
    """Labels at 4x the feature size with: absent classes (4 of 6 never drawn; class 5 only in image 0's corner,
    where it has no boundary pixels), an ignored hole in image 1 and an all-ignore image 2."""
    generator = torch.Generator().manual_seed(seed)
    full_h, full_w = 4 * height, 4 * width
    blocks = torch.randint(0, 4, (batch, 4, 4), generator=generator)
    labels = blocks.repeat_interleave(full_h // 4 + 1, 1)[:, :full_h].repeat_interleave(full_w // 4 + 1, 2)[:, :, :full_w]
    labels = labels.contiguous()
    labels[0, :8, :8] = 5
    labels[1, 20:30, 20:30] = 255
    if batch > 2:
        labels[2] = 255
    features = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    return features, labels


def run_module(clf, features, labels, group_size):
    labels_small = downsample_labels(labels, features.shape[-2:])
    out = clf(features, labels_small)
    loss = SSALoss(clf.num_classes, WEIGHTS, group_size=group_size)
    total, terms = loss(
        out.logits, out.coarse_logits, out.teacher_logits, out.semantic_prototypes, out.teacher_semantic_prototypes,
        out.spatial_prototypes, out.teacher_spatial_prototypes, labels, labels_small,
    )
    return out, labels_small, total, terms


@pytest.mark.parametrize("batch,group_size", [(5, 2), (3, None), (4, 4)])
def test_every_intermediate_and_term_matches_reference(batch, group_size):
    features, labels = make_case(batch=batch, seed=batch)
    clf = SSAClassifier(8, 6, dropout=0.0, group_size=group_size).double()
    out, labels_small, total, terms = run_module(clf, features, labels, group_size)
    ref = reference_classifier(clf, features, out.coarse_logits, labels_small, group_size=group_size)
    ref_terms = reference_losses(ref, out.coarse_logits, labels, group_size=group_size)

    # The case really contains what it is meant to test.
    assert (labels_small == legacy_nearest(labels, *features.shape[-2:])).all()
    assert not (labels == 4).any() and (labels_small[0] == 5).any()
    class5_boundary = opencv_boundary(labels_small[0].numpy())[labels_small[0].numpy() == 5]
    assert class5_boundary.sum() == 0, "class 5 must have no boundary pixels"
    assert (opencv_boundary(labels_small[1].numpy()) > 0).any()
    if batch > 2:
        assert (labels[2] == 255).all()

    for name in ("logits", "semantic_centres", "spatial_centres", "semantic_prototypes", "spatial_prototypes",
                 "teacher_semantic_centres", "teacher_spatial_centres", "teacher_semantic_prototypes",
                 "teacher_spatial_prototypes", "teacher_logits"):
        torch.testing.assert_close(getattr(out, name), ref[name], atol=1e-10, rtol=0, msg=name)
    assert set(terms) == set(ref_terms) == set(WEIGHTS)
    for name in WEIGHTS:
        torch.testing.assert_close(terms[name], ref_terms[name], atol=1e-10, rtol=0, msg=name)
    torch.testing.assert_close(total, sum(terms.values()), atol=1e-12, rtol=0)


def test_gradients_follow_the_detach_table():
    """Gradients of the total loss w.r.t. the feature and every classifier parameter equal the reference's, whose
    detaches are written from docs/method.md, section 5 (fallback rows, teacher in distillation, relation right factor)."""
    features, labels = make_case(batch=5, seed=1)
    group_size = 2
    clf = SSAClassifier(8, 6, dropout=0.0, group_size=group_size).double()
    features.requires_grad_(True)
    params = [features, *clf.parameters()]
    _, _, total, _ = run_module(clf, features, labels, group_size)
    grads = torch.autograd.grad(total, params)

    out = clf(features, downsample_labels(labels, features.shape[-2:]))
    ref = reference_classifier(clf, features, out.coarse_logits, downsample_labels(labels, features.shape[-2:]),
                               group_size=group_size)
    ref_total = sum(reference_losses(ref, out.coarse_logits, labels, group_size=group_size).values())
    ref_grads = torch.autograd.grad(ref_total, params)
    names = ["features", *[n for n, _ in clf.named_parameters()]]
    for name, grad, ref_grad in zip(names, grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, atol=1e-9, rtol=1e-7, msg=name)


def test_float32_agrees_with_float64_reference():
    features, labels = make_case(batch=3, seed=2, dtype=torch.float32)
    clf = SSAClassifier(8, 6, dropout=0.0)
    out, labels_small, _, terms = run_module(clf, features, labels, None)
    clf64 = clf.double()
    ref = reference_classifier(clf64, features.double(), out.coarse_logits.double(), labels_small)
    ref_terms = reference_losses(ref, out.coarse_logits.double(), labels)
    torch.testing.assert_close(out.logits.double(), ref["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.teacher_logits.double(), ref["teacher_logits"], atol=1e-5, rtol=0)
    for name in WEIGHTS:
        torch.testing.assert_close(terms[name].double(), ref_terms[name], atol=1e-5, rtol=1e-5, msg=name)


def test_fallback_rows_are_detached_and_present_rows_are_not():
    features, labels = make_case(batch=2, seed=3)
    features.requires_grad_(True)
    clf = SSAClassifier(8, 6, dropout=0.0).double()
    labels_small = downsample_labels(labels, features.shape[-2:])
    out = clf(features, labels_small)
    present = set(labels_small.unique().tolist()) - {255}
    absent = [k for k in range(6) if k not in present]
    assert absent and present
    # Absent classes: the centre row is the detached Wc / E row -> no gradient into the classifier weight / basis.
    absent_semantic = out.teacher_semantic_centres[:, absent].sum()
    assert torch.autograd.grad(absent_semantic, clf.weight, allow_unused=True)[0] is None
    torch.testing.assert_close(out.teacher_semantic_centres[0, absent], clf.weight[absent, :, 0, 0].detach())
    absent_spatial = out.teacher_spatial_centres[:, absent].sum()
    assert torch.autograd.grad(absent_spatial, clf.class_position_basis.weight, allow_unused=True)[0] is None
    # Present classes: the centre is a mean of F, which receives gradient.
    k = sorted(present)[0]
    grad = torch.autograd.grad(out.teacher_semantic_centres[:, k].sum(), features)[0]
    assert grad.abs().sum() > 0
    # The second half of the teacher fusion input (Wc, E) is not detached.
    assert torch.autograd.grad(out.teacher_semantic_prototypes.sum(), clf.weight)[0].abs().sum() > 0
    assert torch.autograd.grad(out.teacher_spatial_prototypes.sum(), clf.class_position_basis.weight)[0].abs().sum() > 0


def test_teacher_is_trained_only_by_its_own_terms():
    features, labels = make_case(batch=3, seed=4)
    features.requires_grad_(True)
    clf = SSAClassifier(8, 6, dropout=0.0).double()
    _, _, _, terms = run_module(clf, features, labels, None)
    teacher_params = [p for name in TEACHER_MODULES for p in getattr(clf, name).parameters()]
    student_terms = sum(terms[n] for n in ("main", "coarse", "dice_student", "response_distillation",
                                           "semantic_distillation", "spatial_distillation"))
    for grad in torch.autograd.grad(student_terms, teacher_params, allow_unused=True):
        assert grad is None or grad.abs().max() == 0
    for name in ("teacher", "dice_teacher"):
        grads = torch.autograd.grad(terms[name], [*teacher_params, features, clf.weight], retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads), name


def test_response_distillation_gives_no_gradient_to_teacher_logits():
    features, labels = make_case(batch=2, seed=5)
    loss = SSALoss(6, WEIGHTS)
    student = torch.randn(2, 6, *features.shape[-2:], dtype=torch.float64, requires_grad=True)
    teacher = torch.randn_like(student, requires_grad=True)
    value = loss.response_distillation(student, teacher.detach(), downsample_labels(labels, student.shape[-2:]), 2)
    grad_student = torch.autograd.grad(value, student)[0]
    assert grad_student.abs().sum() > 0


def test_coarse_mask_uses_dropout_but_centres_use_the_undropped_feature():
    features, labels = make_case(batch=2, seed=6)
    clf = SSAClassifier(8, 6, dropout=0.5).double().train()
    torch.manual_seed(123)
    out = clf(features)
    torch.manual_seed(123)
    dropped = torch.nn.functional.dropout2d(features, 0.5, training=True)
    expected_coarse = torch.nn.functional.conv2d(dropped, clf.weight, clf.bias)
    torch.testing.assert_close(out.coarse_logits, expected_coarse)
    ref = reference_classifier(clf, features, out.coarse_logits)  # the reference uses F itself
    torch.testing.assert_close(out.logits, ref["logits"], atol=1e-10, rtol=0)
    torch.testing.assert_close(out.semantic_centres, ref["semantic_centres"], atol=1e-10, rtol=0)


def test_equal_coarse_logits_give_plain_spatial_means():
    features, _ = make_case(batch=2, seed=7)
    clf = SSAClassifier(8, 6, dropout=0.0).double()
    with torch.no_grad():
        clf.weight.zero_()
        clf.bias.zero_()
    out = clf(features)
    position = clf.position_encoder(features)
    mean_feature = features.flatten(2).mean(-1)[:, None].expand(-1, 6, -1)
    torch.testing.assert_close(out.semantic_centres, mean_feature)
    torch.testing.assert_close(out.spatial_centres, position.flatten(2).mean(-1)[:, None].expand(-1, 6, -1))


def test_logits_are_bounded_cosines_and_scale_invariant():
    features, _ = make_case(batch=2, seed=8)
    clf = SSAClassifier(8, 6, dropout=0.0, logit_scale=15.0).double()
    out = clf(features)
    assert out.logits.abs().max() <= 15.0 + 1e-9
    pixels = torch.randn(2, 8, 20, dtype=torch.float64)
    prototypes = torch.randn(2, 6, 8, dtype=torch.float64)
    base = cosine_logits(pixels, prototypes, clf.logit_scale)
    pixel_scale = torch.rand(2, 1, 20, dtype=torch.float64) + 0.1
    prototype_scale = torch.rand(2, 6, 1, dtype=torch.float64) + 0.1
    torch.testing.assert_close(cosine_logits(pixels * pixel_scale, prototypes * prototype_scale, clf.logit_scale),
                               base)


def test_spatial_teacher_centres_are_per_image():
    features, labels = make_case(batch=2, seed=9)
    clf = SSAClassifier(8, 6, dropout=0.0).double()
    small = downsample_labels(labels, features.shape[-2:])
    changed = small.clone()
    changed[1] = (changed[1] + 1) % 4
    a, b = clf(features, small), clf(features, changed)
    torch.testing.assert_close(a.teacher_spatial_centres[0], b.teacher_spatial_centres[0])
    assert not torch.allclose(a.teacher_spatial_centres[1], b.teacher_spatial_centres[1])
    # Semantic centres pool the whole group, so image 1's labels change image 0's prototypes.
    assert not torch.allclose(a.teacher_semantic_prototypes[0], b.teacher_semantic_prototypes[0])


def test_distillation_terms_at_equal_prototypes():
    loss = SSALoss(5, WEIGHTS)
    prototypes = torch.randn(3, 5, 8, dtype=torch.float64)
    assert loss.semantic_distillation(prototypes, prototypes) == 0
    probs = prototypes.softmax(-1)
    mean_entropy = -(probs * probs.log()).sum(-1).mean()
    torch.testing.assert_close(loss.spatial_distillation(prototypes, prototypes), mean_entropy)
    # Orthogonal teacher prototypes: a near-identity relation, so the student's off-diagonal mass is all excess.
    teacher = torch.eye(5, 8, dtype=torch.float64).expand(3, -1, -1)
    student = prototypes.clone().requires_grad_(True)
    value = loss.semantic_distillation(student, teacher)
    unit = prototypes / prototypes.norm(dim=-1, keepdim=True)
    relation = torch.softmax(15 * unit @ unit.transpose(1, 2), dim=-1)
    teacher_relation = torch.softmax(15 * teacher @ teacher.transpose(1, 2), dim=-1)
    off = 1 - torch.eye(5, dtype=torch.float64)
    expected = ((relation - teacher_relation).clamp(min=0) * off).sum() / 15
    torch.testing.assert_close(value.detach(), expected)
    assert value > 0 and torch.autograd.grad(value, student)[0].abs().sum() > 0
    # The reverse direction (teacher spread, student peaked) has no positive excess.
    assert loss.semantic_distillation(teacher.clone(), prototypes) < value


def test_dice_counts_ignored_pixels_in_the_denominator():
    loss = SSALoss(3, WEIGHTS)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    logits = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    logits[:, 0, :, :4] = 5.0
    logits[:, 1, :, 4:] = 5.0
    def dice(logits, labels):
        return loss._full_resolution_terms(logits, labels, loss._class_counts(labels, logits.dtype))[1]

    clean = dice(logits, labels)
    ignored = labels.clone()
    ignored[:, :2] = 255
    positive_there = logits.clone()
    positive_there[:, :, :2] = 5.0  # every class positive on the (now) ignored rows
    with_ignore = dice(positive_there, ignored)
    without_positive = dice(logits, ignored)
    assert with_ignore > without_positive > 0
    assert clean < with_ignore


def test_all_ignore_batch_gives_finite_zero_label_terms():
    features, labels = make_case(batch=2, seed=10)
    labels[:] = 255
    clf = SSAClassifier(8, 6, dropout=0.0).double()
    features.requires_grad_(True)
    _, _, total, terms = run_module(clf, features, labels, None)
    assert torch.isfinite(total)
    for name in ("main", "coarse", "teacher", "response_distillation", "dice_student", "dice_teacher"):
        assert terms[name] == 0, name
    total.backward()
    assert torch.isfinite(features.grad).all()


def test_inference_without_autograd_equals_the_reference():
    clf = SSAClassifier(8, 6).double()
    features = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        clf.eval()
        inference = clf(features)
    reference = reference_classifier(clf, features, inference.coarse_logits)
    torch.testing.assert_close(inference.logits, reference["logits"], atol=1e-10, rtol=0)
