"""The diagnoses and leads every part of mupriv agrees on."""

# Output order of the model's logits (the paper's six TNMG/CODE classes).
CLASSES: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")

# Canonical lead order of every signal array, (n, length, 12).
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
