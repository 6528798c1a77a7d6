"""What every package shares, defined once: the two modes, EXAONE 4.0's chat markers and recommended
temperatures, and what counts as a correct answer. Nothing here imports anything."""

REASONING = "reasoning"
NON_REASONING = "non_reasoning"
MODES = (REASONING, NON_REASONING)

# EXAONE 4.0's chat format: a reasoning turn is `<think>\n...</think>\n\n` then the answer; a
# non-reasoning turn follows an empty think block; generation stops at END_OF_TURN.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
END_OF_TURN = "[|endofturn|]"

# EXAONE 4.0's recommended sampling temperatures (reasoning T=0.6, non-reasoning T < 0.6).
RECOMMENDED_TEMPERATURE = {REASONING: 0.6, NON_REASONING: 0.4}

# A score of 1 is a correct answer; the slack absorbs float rounding in sums of weighted rewards.
CORRECT_THRESHOLD = 1.0 - 1e-9
