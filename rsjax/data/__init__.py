"""Input pipelines: tfds datasets through tf.data, augmentation, host batches."""
