"""The explorer: a local Gradio app that shows what each trained cell of the study predicts, and
where it looks, for the same image at every resolution (`python -m resomap.explore`)."""
