"""Train state, sharded step factory, losses (SFT, preference, value, RL) and loops."""
