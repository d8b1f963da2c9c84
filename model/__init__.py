"""The language model and its DeepSpeed ZeRO training: the pretraining end of the pipeline."""
