"""Student set-up for training: the fused tanh-GELU swap changes speed, not the model."""

from __future__ import annotations

import torch
from transformers import T5ForConditionalGeneration
from transformers.activations import GELUTanh, NewGELUActivation

from qcrd_plugin.config import StudentConfig
from qcrd_plugin.students import build_student, use_fused_gelu


def test_fused_gelu_gives_the_same_outputs_and_saves_as_gelu_new(tmp_path):
    torch.manual_seed(0)
    student, tok = build_student(StudentConfig(), ["predict: explain: the cat sat on 12 mats"] * 4)
    ids = torch.randint(4, len(tok), (3, 9))
    decoder_ids = torch.randint(4, len(tok), (3, 7))
    before = student(input_ids=ids, decoder_input_ids=decoder_ids).logits
    assert use_fused_gelu(student) == 2 * StudentConfig().num_layers  # one per feed-forward layer
    assert not any(type(m) is NewGELUActivation for m in student.modules()) and any(isinstance(m, GELUTanh) for m in student.modules())
    after = student(input_ids=ids, decoder_input_ids=decoder_ids).logits
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-5)
    student.save_pretrained(tmp_path)
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.config.dense_act_fn == "gelu_new" and any(type(m) is NewGELUActivation for m in reloaded.modules())
    assert torch.allclose(reloaded(input_ids=ids, decoder_input_ids=decoder_ids).logits, after, atol=1e-5, rtol=1e-5)
