"""The control plane: the controller, its metadata state machine and log, and partition placement."""
