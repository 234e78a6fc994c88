"""Train the sample iris artifacts offline (the data set ships inside scikit-learn).

Writes samples/models/iris/model.joblib (LogisticRegression) and samples/models/iris2/model.joblib
(a shallow DecisionTree) — two models that disagree on PROBE, so experiments can tell which one
answered. Run: python samples/train_iris.py
"""

import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

MODELS = Path(__file__).resolve().parent / "models"
# A flower on the versicolor/virginica border: the two samples give different classes for it.
PROBE = [[6.0, 2.2, 5.0, 1.5]]


def train() -> dict[str, int]:
    x, y = load_iris(return_X_y=True)
    models = {
        "iris": LogisticRegression(max_iter=1000).fit(x, y),
        # Depth 1 cannot separate versicolor from virginica, so it answers 1 where iris says 2.
        "iris2": DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y),
    }
    answers = {}
    for name, model in models.items():
        folder = MODELS / name
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, folder / "model.joblib")
        answers[name] = int(model.predict(PROBE)[0])
    return answers


def main() -> int:
    answers = train()
    for name, cls in answers.items():
        print(f"{name}: {MODELS / name / 'model.joblib'} predicts class {cls} for {PROBE[0]}")
    if answers["iris"] == answers["iris2"]:
        print("error: iris and iris2 agree on the probe input", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
