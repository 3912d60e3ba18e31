"""The base training config: every key a run reads, with the paper's recipe as defaults.

Durations: `num_epochs` (float) unless `num_train_steps` > 0. Learning rate peaks at
`optim.base_learning_rate x global_batch_size / 256` after `optim.warmup_epochs`, then decays to 0
with a cosine (`optim.schedule="exponential"`: x `optim.decay_rate` every `optim.decay_epochs`,
counted from step 0, as EfficientNet). Weight decay is coupled L2 (gradient + wd * w) on everything
but BatchNorm. `model.family` picks the network: "resnet_rs" (depth, stage_sizes, width),
"efficientnet" (width_multiplier and depth_multiplier scale B0; model.depth must be 0) or
"resnet3d" (video clips: depth, stage_sizes, width and `model.temporal`; `data.num_frames` > 0).
"""

import ml_collections

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = ""  # a readable run name (sweeps set it); defaults to the preset
    c.sweep = ""  # the sweep the run belongs to (sweeps set it); labels, not part of the run id
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.family = "resnet_rs"  # "efficientnet", "resnet3d" (rsjax.models.registry.FAMILIES)
    c.model.depth = 50
    c.model.depth_multiplier = 1.0  # EfficientNet only: block repeats x this (B0 1.0 ... B7 3.1)
    c.model.stage_sizes = ()  # non-empty overrides the depth's layout
    c.model.width_multiplier = 1.0
    c.model.se_ratio = 0.25
    c.model.dropout_rate = 0.25
    c.model.stochastic_depth_rate = 0.0
    c.model.stem_downsample = "conv"
    c.model.stem_stride = 2  # 1 for small images (halves the output stride)
    # ResNet-D stem and shortcuts; False (with se_ratio=None): Table 5's vanilla ResNet.
    c.model.resnet_d = True
    c.model.conv_impl = "auto"  # "auto": matmul-form convs on CPU, XLA convs elsewhere
    c.model.scan_blocks = False  # nn.scan over identical blocks: fast compiles for deep nets
    c.model.remat = "none"  # "full" or "dots": recompute block activations (less memory)
    # The reference keeps BN momentum 0 and evaluates an EMA of the BN statistics (Appendix C);
    # 0.9 + EMA is equivalent up to smoothing and also gives usable raw-weight statistics.
    c.model.bn_momentum = 0.9
    c.model.bn_group_size = 0  # 0: statistics over the global batch; N: per group of N examples
    c.model.dtype = "float32"  # or "bfloat16" (params and BN statistics stay float32)
    # model.family="resnet3d" only (rsjax.models.ResNet3D; the other families keep these values):
    # per-block temporal kernels ("rs", "baseline" or "none"), the stem's temporal kernel and
    # stride, the stem max-pool's temporal stride, self-gating in every stage, and ResNet-D's
    # average-pool shortcut (model.resnet_d picks the 3D ResNet-D stem).
    c.model.temporal = ml_collections.ConfigDict(
        {
            "kernels": "rs",
            "stem_kernel": 5,
            "stem_stride": 2,
            "pool_stride": 2,
            "self_gating": True,
            "resnet_d_shortcut": False,
        }
    )

    c.data = ml_collections.ConfigDict()
    c.data.name = "imagenet2012"
    c.data.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data dir (None: default)
    c.data.manual_dir = "/usr/share/datasets/fashion-mnist"  # Fashion-MNIST IDX files
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.train_examples = 0  # split sizes; 0 reads them from the tfds metadata
    c.data.eval_examples = 0
    # A split also evaluated after the last step (eval preprocessing), recorded as train_* metrics:
    # e.g. "train[:6000]" shows how far a run fits its training data (""/None: none).
    c.data.train_eval_split = ""
    # A held-out split carved from the training data, also evaluated after the last step and
    # recorded as val_* metrics: what model selection reads (never the test split). ""/None: none.
    c.data.validation_split = ""
    c.data.num_classes = 1000
    c.data.channels = 3  # image channels (checked against the dataset; used by `rsjax profile`)
    c.data.image_size = 160
    c.data.area_range = (0.08, 1.0)
    c.data.flip = True
    c.data.randaugment_layers = 2
    c.data.randaugment_magnitude = 10.0  # 0 disables RandAugment
    c.data.cutout_pad = 0  # cutout square of side 2 * cutout_pad px (not in the paper; 0: off)
    c.data.resize_method = "bicubic"
    c.data.eval_crop_fraction = 0.875
    # Evaluation resolution (0: data.image_size); the paper's video protocol trains at 224 and
    # evaluates at 256 (Appendix G).
    c.data.eval_image_size = 0
    # Video (a dataset with a "video" feature; rsjax/data/clips.py): clips of num_frames frames
    # frame_stride apart (0 frames: an image dataset); the frames' shorter side resized to
    # image_size x U[scale_range] before one random crop and flip per clip (scale jittering;
    # (1, 1): none); evaluation averages the softmax of eval_clips x eval_crops views.
    c.data.num_frames = 0
    c.data.frame_stride = 1
    c.data.scale_range = (1.0, 1.0)
    c.data.eval_clips = 1
    c.data.eval_crops = 1
    c.data.mean = IMAGENET_MEAN
    c.data.std = IMAGENET_STD
    c.data.shuffle_buffer = 16_384
    # Input shards S of the train split (0: one per process). A fixed S makes the global batches,
    # and the run, the same on any number of processes that divides it.
    c.data.input_shards = 0
    c.data.prefetch_batches = 4  # host batches prepared ahead of the train step
    c.data.threads = 0  # tf.data private thread pool (0: TF's default)
    # Decode the train split once into host memory and read it from there every epoch (the same
    # batches; for splits that fit in RAM: Fashion-MNIST's is 47 MB, ImageNet's is not).
    c.data.decoded_cache = False
    # tf.data autotuning (buffer sizes, RAM budget). Off by default: its model thread can hold
    # up deleting the train iterator (end of run, preemption) for most of a minute; off, AUTOTUNE
    # maps run one call per core, no slower, with the same batches (docs/performance.md).
    c.data.autotune = False

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"  # or "rmsprop" (TF1's, as EfficientNet: decay 0.9, eps 1e-3 in the sqrt)
    c.optim.base_learning_rate = 0.1  # per 256 examples
    c.optim.momentum = 0.9
    c.optim.nesterov = True  # sgd only
    c.optim.rmsprop_decay = 0.9  # rmsprop only: of the squared-gradient average
    c.optim.rmsprop_epsilon = 1e-3  # rmsprop only
    c.optim.weight_decay = 4e-5
    c.optim.warmup_epochs = 5.0
    c.optim.schedule = "cosine"  # or "exponential" (staircase)
    c.optim.decay_rate = 0.97  # exponential only: the factor per decay_epochs
    c.optim.decay_epochs = 2.4  # exponential only

    # Fine-tuning (Appendix F; rsjax/train/init_from.py): a fresh run's backbone from an rsjax run
    # directory's checkpoint (step 0: the newest; "ema" or "raw" weights) or a timm state dict
    # file (.npz / .safetensors); the classifier head is initialised anew. "": random init.
    c.init_from = ml_collections.ConfigDict({"path": "", "step": 0, "weights": "ema"})

    # Noisy-Student co-training (Section 7.3; rsjax/data/pseudo_stream.py): each step adds
    # `ratio` x global_batch_size images of the unlabelled split that `rsjax pseudo-label` wrote
    # to `pseudo_labels` (a directory; "": no co-training), trained against the teacher's soft
    # labels p^(1/temperature) normalised, or with `hard` its argmax smoothed by
    # `label_smoothing`; loss = labelled CE + ratio x pseudo-labelled CE.
    c.cotrain = ml_collections.ConfigDict(
        {
            "pseudo_labels": "",
            "ratio": 1.0,
            "hard": False,
            "temperature": 1.0,
            "label_smoothing": 0.0,
        }
    )

    c.label_smoothing = 0.1
    c.ema_decay = 0.9999
    c.ema_warmup = True  # decay = min(ema_decay, (1 + t) / (10 + t))

    c.global_batch_size = 4096
    c.eval_batch_size = 1000
    c.num_epochs = 350.0
    c.num_train_steps = -1

    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})
    c.fsdp = False
    # "auto": momentum and EMAs as flat vectors on CPU (faster compiles), parameter-shaped trees
    # elsewhere; the trainer records the resolved "flat" or "tree" (rsjax/train/state.py).
    c.state_layout = "auto"

    c.log_every_steps = 100
    c.eval_every_epochs = 0.0  # 0: evaluate only at the end
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.progress = True
    return c
