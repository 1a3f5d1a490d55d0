"""Training: the pipeline (`pipeline`), its data (`data`), the Keras model and its TFLite
conversion (`tflite`) and the forest's packed form (`packing`). TensorFlow is imported here
only, and only when a TFLite model is trained."""
