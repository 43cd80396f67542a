"""finealign.eval"""
