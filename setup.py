"""basic_tf: BASIC (Pham et al., arXiv 2111.10050) contrastive image-text training in TF/Keras 3."""
import setuptools

# The pinned stack (checked to install together with `pip check` clean): tf-models-official
# 2.20.0 (for orbit) fixes TensorFlow at 2.20 and absl-py at 1.x.
INSTALL_REQUIRES = [
    "tensorflow==2.20.0",
    "keras==3.15.1",
    "tensorflow-text==2.20.1",
    "tf-models-official==2.20.0",
    "tensorflow-datasets==4.9.10",
    "gin-config==0.5.0",
    "absl-py==1.4.0",
    "sentencepiece==0.2.3",
    "numpy>=2.0",
    "pillow",
    "matplotlib",
]

# tools/<name>.py is the command basic-<name with dashes> (basic_tf.cli.<name>), e.g.
# tools/train.py -> basic-train.
COMMANDS = ["train", "evaluate", "export", "make_tfrecords", "train_tokenizer", "new_experiment",
            "plan", "serving_client"]

setuptools.setup(
    name="basic_tf",
    version="0.1.0",
    description="BASIC contrastive image-text dual encoders in TensorFlow / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    # tools/ and gin/ stay where the layout puts them and are installed inside the package (one
    # copy of each file): tools/ as basic_tf/tools (run by the console scripts below, see
    # basic_tf/cli.py), gin/ as basic_tf/gin (found by basic_tf.config when there is no checkout;
    # the model includes of gin/models/ with it, so `include 'models/x.gin'` resolves there too).
    packages=setuptools.find_packages(include=["basic_tf", "basic_tf.*"]) + [
        "basic_tf.tools", "basic_tf.gin"],
    package_dir={"basic_tf.tools": "tools", "basic_tf.gin": "gin"},
    package_data={"basic_tf": ["zeroshot/data/*.json", "zeroshot/data/*.txt"],
                  "basic_tf.gin": ["*.gin", "models/*.gin"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "pytest-xdist==3.8.0", "tensorflow-serving-api==2.20.0"],
    },
    entry_points={"console_scripts": ["basic-demo = basic_tf.demo:console_main"] + [
        f"basic-{name.replace('_', '-')} = basic_tf.cli:{name}" for name in COMMANDS]},
)
