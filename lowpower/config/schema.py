"""The config schema: every ``section.key`` with its types, default, bounds and a line of help.

One home for what a run config may hold; lowpower/config.py loads, merges and checks against it, and
``lowpower config`` prints it as the reference in docs/training.md. A new section (say
``quant`` or ``distill``) is one more entry of :data:`SCHEMA`.

Example:
    >>> SCHEMA["train"]["epochs"].default
    100
"""

OPTIONAL = "optional"  # marker in a Key's types: None is allowed
MAX_SEED = 2 ** 32 - 1  # numpy and torch take non-negative seeds; 32 bits give plenty of runs
MAX_IMAGES = 100000  # synthetic counts: 100000 images of 512x512 already take about 50 GB


class Key:
    """One schema entry: allowed types, default, choices and a line of help for the reference."""

    def __init__(self, types, default, help, choices=None, low=None, high=None, above=None):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.help = help
        self.choices = choices
        self.low, self.high, self.above = low, high, above  # value >= low, <= high, > above


SCHEMA = {
    "model": {
        "arch": Key(str, "unet", "network name from networks.list_models()"),
        "kwargs": Key(dict, {}, "builder arguments of that network, e.g. {base_width: 16}"),
        "pretrained": Key((bool, str, OPTIONAL), False,
                          "ImageNet backbone weights to load on the workstation: true (IMAGENET1K_V1), "
                          "a torchvision weights name, the path of the network's authors' ImageNet file "
                          "(pidnet_s, ddrnet23_slim, ppliteseg_t, topformer_t; relative to the repository "
                          "root), or false to train from scratch"),
        "init_from": Key((str, OPTIONAL), None, "checkpoint whose layout and weights start a new run, e.g. a pruned "
                                                "one (lowpower prune): same arch and kwargs, its width "
                                                "plan kept; relative to the repository root; null: not used"),
    },
    "data": {
        "dataset": Key(str, "lpcvc", "folder layout of data.root", ["lpcvc", "synthetic", "cityscapes"]),
        "root": Key(str, "data/lpcvc", "data folder; relative paths are taken from the repository root"),
        "num_classes": Key(int, 14, "classes the model predicts (LPCVC: 14, Cityscapes: 19)", low=1, high=255),
        "input_size": Key(int, 512, "square side the model sees in training (base scale) and evaluation", low=1),
        "crop_size": Key((int, OPTIONAL), None, "training crop side; null means data.input_size", low=1),
        "scale_min": Key(float, 0.5, "smallest random scale factor of the training resize", above=0),
        "scale_max": Key(float, 2.0, "largest random scale factor of the training resize", above=0),
        "hflip": Key(float, 0.5, "probability of a horizontal flip", low=0, high=1),
        "jitter": Key(float, 0.2, "brightness/contrast/saturation jitter strength (0 disables)", low=0),
        "photometric": Key(bool, False, "mmsegmentation's photometric distortion: brightness ±32, contrast and "
                                        "saturation x0.5-1.5, hue ±18 (OpenCV units), each with probability 0.5"),
        "cache": Key(bool, False, "decode and downsize every image once, into memory (small data sets)"),
        "workers": Key(int, 4, "data loader processes per training process (0 loads in the main process)", low=0),
        "synthetic_train": Key(int, 300, "synthetic data: training images generated when data.root is missing",
                               low=0, high=MAX_IMAGES),
        "synthetic_val": Key(int, 50, "synthetic data: validation images", low=0, high=MAX_IMAGES),
        "synthetic_test": Key(int, 50, "synthetic data: test images (referee layout)", low=0, high=MAX_IMAGES),
        "synthetic_seed": Key(int, 0, "synthetic data: generator seed", low=0, high=MAX_SEED),
        "val_on_train": Key(bool, False, "allow validating on the training images (a data.root whose only pair "
                                         "of folders is a plain IMG + GT serves both splits); false refuses "
                                         "such a root, whose val score would not measure new images"),
    },
    "train": {
        "epochs": Key(int, 100, "passes over the training split", low=1),
        "batch_size": Key(int, 8, "images per step per process (per GPU under torchrun)", low=1),
        "optimizer": Key(str, "sgd", "optimizer", ["sgd", "adamw"]),
        "lr": Key(float, 0.01, "peak learning rate (reached after the warm-up)", above=0),
        "momentum": Key(float, 0.9, "SGD momentum", low=0, high=1),
        "weight_decay": Key(float, 1e-4, "weight decay", low=0),
        "warmup_iters": Key(int, 100, "steps of linear warm-up from lr/100 to lr", low=0),
        "poly_power": Key(float, 0.9, "power of the poly decay lr * (1 - step/steps) ** power", low=0),
        "class_weights": Key((list, str, OPTIONAL), None,
                             "cross-entropy class weights: null, a list with one weight per class, "
                             "or 'inverse_sqrt' (from the training masks' pixel shares)"),
        "dice_weight": Key(float, 0.0, "weight of a per-image soft Dice loss (averaged like the referee's mean Dice) "
                                         "added to the cross-entropy (0 disables)", low=0),
        "amp": Key(bool, True, "mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 (AMX, "
                               "AVX512-BF16), fp32 elsewhere"),
        "channels_last": Key(bool, False, "NHWC memory layout (faster convolutions with amp on recent "
                                          "CPUs and tensor-core GPUs)"),
        "clip_grad": Key((float, OPTIONAL), None, "clip the gradient norm to this value; null disables", above=0),
        "val_every": Key(int, 1, "validate every N epochs (and always after the last)", low=1),
        "sync_bn": Key(bool, False, "BatchNorm statistics over all processes' batches under torchrun: torch's "
                                     "SyncBatchNorm on CUDA, lowpower's CpuSyncBatchNorm on the CPU (gloo)"),
        "ema": Key(bool, False, "validate and save as best.pt an exponential moving average of the weights "
                                "(last.pt keeps the raw weights and the average, so resume stays exact)"),
        "ema_decay": Key(float, 0.999, "train.ema: the average's decay per optimiser step once warmed up",
                         low=0, high=1),
        "ema_warmup": Key(int, 100, "train.ema: steps over which the decay rises as decay * (1 - exp(-step / "
                                    "ema_warmup)), so the average forgets the initial weights; 0: none", low=0),
        "seed": Key(int, 0, "seed of weights, data order and augmentation", low=0, high=MAX_SEED),
        "device": Key(str, "auto", "auto (CUDA when present), cuda or cpu", ["auto", "cuda", "cpu"]),
        "threads": Key((int, OPTIONAL), None, "CPU threads for torch; null keeps torch's default", low=1),
        "tensorboard": Key(bool, False, "TensorBoard log in OUT/tensorboard: scalars (the loss and each of its terms, "
                                        "lr, val metrics) every epoch and prediction panels at every validation; "
                                        "view with tensorboard --logdir OUT/tensorboard"),
    },
    "loss": {
        "ohem": Key(bool, False, "cross-entropy over the hard pixels only (mmsegmentation's OHEM sampler): those whose "
                                 "true-class probability is under loss.ohem_thresh, at least loss.ohem_min_kept"),
        "ohem_thresh": Key(float, 0.7, "OHEM: pixels whose true-class probability is below this always count",
                           above=0, high=1),
        "ohem_min_kept": Key(int, 100000, "OHEM: the threshold rises until about this many pixels per batch count",
                             low=1),
        "focal": Key(float, 0.0, "focal loss exponent gamma: each pixel's cross-entropy times (1 - p)^gamma "
                                 "(0: plain cross-entropy; 2 in Lin et al. 2017); adds to the Dice term as before",
                     low=0),
        "aux_weights": Key(dict, {}, "weight of each auxiliary output the network returns in training, by name "
                                     "(its class's aux_heads, e.g. {aux: 0.4, boundary: 20} for pidnet_s): "
                                     "segmentation heads get the run's loss, boundary heads a class-balanced "
                                     "BCE on the label edges; {} or 0 leaves a head out"),
    },
    "eval": {
        "batch_size": Key(int, 8, "images per step in validation and test.py", low=1),
        "output_size": Key(int, 512, "side of the predicted masks that are scored (the referee's 512)", low=1),
        "min_class_area": Key(float, 0.0, "drop a class from an image's prediction when it covers less than "
                                          "this share of the image (its pixels go to the next likely class); "
                                          "the referee scores a spurious class 0. Used by validation, test.py "
                                          "and the package. 0 disables", low=0),
    },
    "quant": {
        "qat": Key(bool, False, "quantization-aware training: fake-quant int8 weights and activations in training "
                                "and validation; best.pt stays the QAT state, best_int8.pt is its int8 conversion"),
        "engine": Key(str, "qnnpack", "int8 engine the model is prepared and converted for (qnnpack: the "
                                      "device's ARM cores)", ["qnnpack", "x86", "fbgemm", "onednn"]),
        "freeze_observers_epoch": Key((int, OPTIONAL), None, "observers update in the first N QAT epochs, then "
                                                             "their ranges stay fixed; null: never frozen", low=0),
        "freeze_bn_epoch": Key((int, OPTIONAL), None, "BatchNorm running statistics update in the first N QAT "
                                                      "epochs, then stay fixed; null: never frozen", low=0),
        "init_from": Key((str, OPTIONAL), None, "float checkpoint (best.pt of a float run) whose weights start a "
                                                "new QAT run; null starts from model.pretrained / scratch"),
        "fixed_point": Key((str, OPTIONAL), None, "train with fixed-point fake quantization in place (arXiv "
                                                  "1908.01073): the scheme, range (ours), paper (the authors' "
                                                  "quantizer) or lsq (learned step sizes); null: off. Conv and "
                                                  "linear weights and every activation are quantized; biases "
                                                  "and BatchNorm stay float. Start from a float run with "
                                                  "model.init_from", ["range", "paper", "lsq"]),
        "weight_bits": Key(int, 4, "quant.fixed_point: width of the weights, sign included", low=2, high=16),
        "act_bits": Key(int, 6, "quant.fixed_point: width of the activations, sign included", low=2, high=16),
        "edge_bits": Key((int, OPTIONAL), None, "quant.fixed_point: width of the first and last layers' weights "
                                                "and activations (e.g. 8; 32 keeps them float, as the paper's "
                                                "authors did); null: as every layer", low=2, high=32),
        "calib_batches": Key(int, 4, "quant.fixed_point: training batches that set the activation ranges (and "
                                     "LSQ's first steps) before a new run's first step", low=1, high=64),
    },
    "distill": {
        "teacher": Key((str, OPTIONAL), None, "checkpoint of a trained teacher (built from its own arch and kwargs, "
                                              "frozen); null trains without distillation"),
        "kd_weight": Key(float, 0.0, "weight of logits KD: KL(teacher || student) of per-pixel class "
                                     "distributions at kd_temperature, times T^2 (0 disables)", low=0),
        "kd_temperature": Key(float, 1.0, "softmax temperature of logits KD", above=0),
        "cwd_weight": Key(float, 0.0, "weight of channel-wise distillation of the logits (Shu et al. 2021: "
                                      "per-channel softmax over positions, KL, times T^2; 0 disables)", low=0),
        "cwd_temperature": Key(float, 1.0, "softmax temperature of CWD", above=0),
        "feature_layers": Key(list, [], "feature distillation pairs 'student_layer:teacher_layer' (names from "
                                        "model.named_modules()), matched through trained 1x1 conv adapters"),
        "feature_weight": Key(float, 0.0, "weight of the feature MSE through the adapters (0 disables)", low=0),
        "teacher_input_size": Key((int, OPTIONAL), None, "the teacher sees each batch resized by "
                                                         "teacher_input_size / data.input_size (null: as the "
                                                         "student); its logits are resized to the student's", low=1),
    },
}
