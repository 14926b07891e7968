"""Classification loss for fine-tuning: timm's soft-target cross-entropy, registered as is.

Fine-tuning always hands the head a target distribution per image: mixup/cutmix mixtures with
label smoothing folded in, or a smoothed one-hot, or a plain one-hot (see
``ClsDataPreprocessor``). One loss, ``-sum(target * log_softmax(logits))`` averaged over the
batch, then covers every case, exactly as timm's training script does with mixup on. timm's module
is registered directly, not re-implemented.
"""
from timm.loss import SoftTargetCrossEntropy

from fastmim.registry import MODELS

MODELS.register_module(name='SoftTargetCrossEntropy', module=SoftTargetCrossEntropy)
