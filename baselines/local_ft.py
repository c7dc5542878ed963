"""`local-ft`: the device fine-tunes every layer of the pretrained model on its own data; nothing sent up."""
from baselines.on_device import OnDeviceParams, build_on_device
from baselines.registry import Scheme, register
from simulator.core.model import PARTS

SCHEME = register(Scheme(
    name="local-ft",
    summary="pretrained model down once; every layer trained on the device; nothing sent up",
    observable="nothing",
    shared_parts=(),
    device_parts=PARTS,
    params=OnDeviceParams,
    build=lambda setup: build_on_device(setup, PARTS),
    federated=False,
))
