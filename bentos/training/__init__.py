"""Training: the pipeline (`pipeline`), its data (`data`), the Keras model and its TFLite
conversion (`tflite`), the forest's packed form (`packing`) and each model's report (`report`).
TensorFlow and matplotlib are imported here only, and only when a model is trained."""
