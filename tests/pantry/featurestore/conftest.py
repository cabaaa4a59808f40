"""These tests compare pantry's encodings with Feast's own classes, imported at collection: import the SDK the way
pantry's processes do (pantry/featurestore/feast_sdk.py), at half the cost of a plain `import feast`."""

from pantry.featurestore import feast_sdk

feast_sdk.import_feast()
