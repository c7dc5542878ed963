"""`mu-ft`: the paper's µ-Fine-Tuning. The device trains encoder + decoder on its own data; the middle
stays frozen (bitwise) and nothing but an empty acknowledgement goes up."""
from baselines.on_device import OnDeviceParams, build_on_device
from baselines.registry import Scheme, register

SCHEME = register(Scheme(
    name="mu-ft",
    summary="pretrained model down once; encoder + decoder trained on the device; nothing sent up",
    observable="nothing",
    shared_parts=(),
    device_parts=("encoder", "decoder"),
    params=OnDeviceParams,
    build=lambda setup: build_on_device(setup, ("encoder", "decoder")),
    federated=False,
))
