"""The commands ``python -m sweep.run|export|report|ui|evaluate``, one module each, and the study-file
argument they share (``cli``); they may import every wing. The modules ``sweep/<command>.py`` only start them.
"""
