"""Small Fashion-MNIST CNN used to evaluate generated samples (class accuracy, FID-FMNIST features).

Input: [N, 1, 32, 32] grey in [-1, 1] (28x28 padded by 2, like the generator's training data).
`features` is the 128-d penultimate activation (after ReLU) on which the Frechet distance is taken.
"""
import torch
import torch.nn as nn


class FMNISTClassifier(nn.Module):
    FEAT_DIM = 128

    def __init__(self):
        super().__init__()

        def stage(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*stage(1, 32), *stage(32, 64), *stage(64, 128))  # -> 128 x 4 x 4
        self.fc1 = nn.Linear(128 * 4 * 4, self.FEAT_DIM)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(self.FEAT_DIM, 10)

    def features(self, x):
        return torch.relu(self.fc1(self.body(x).flatten(1)))

    def forward(self, x):
        return self.fc2(self.drop(self.features(x)))
