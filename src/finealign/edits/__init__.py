"""finealign.edits"""
