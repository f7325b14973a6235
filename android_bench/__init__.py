"""Code that runs ON devices (phones under Termux, Raspberry Pi, Linux boards) and on the host.
Self-contained: stdlib + numpy + a TFLite runtime. Nothing here imports edgeprune or TensorFlow
unless no lighter runtime exists."""
