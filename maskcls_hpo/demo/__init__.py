"""The `demo-data` generator: datasets in the competition layout (docs/architecture.md, "Data layout"), contact sheets.

Two kinds of faces:

- procedural (default): faces drawn with PIL. Gender shows in hair length, face shape and lip colour; age band
  in hair greyness and wrinkle lines on the forehead and around the eyes (all above the mask, so the age
  is visible in every mask state); the mask state in the mask itself. Each image adds nuisance variation
  (position, scale, rotation, background, lighting, noise).
- real photos (`faces=DIR`, UTKFace naming `AGE_GENDER_RACE_*.jpg`): each photo is one person; the mask
  is drawn onto it at the landmarks of the aligned UTKFace crops (eyes y=0.40, nose tip 0.58, mouth 0.72,
  chin 0.90 of the height).

Mask states: `mask1`..`mask5` wear one of 5 mask styles each (surgical blue pleated, black cloth, white KN95
with a centre seam, patterned, coloured cloth; a per-person permutation), `incorrect_mask` wears a random
style pulled below the nose or onto the chin, `normal` shows the bare face.

The real set's quirks are reproduced, deterministically from the seed: ids with leading zeros and a few
with a `-1` suffix, `.jpeg`/`.png` files and upper-case extensions mixed into a person's folder, grayscale
and RGBA images, and hidden `._*` AppleDouble files beside the images.

From the shell: `maskcls-hpo demo-data OUT [options]`.

Private modules: ``_faces`` (procedural faces and photos, with their landmarks), ``_masks`` (the 5 mask styles),
``_dataset`` (persons, quirks, the files) and ``_sheet`` (contact sheets).
"""

from maskcls_hpo.demo._dataset import DemoSummary, parse_size, write_demo_dataset
from maskcls_hpo.demo._masks import MASK_STYLES
from maskcls_hpo.demo._sheet import write_contact_sheet
from maskcls_hpo.errors import DemoDataError

__all__ = [
    "DemoDataError",
    "DemoSummary",
    "MASK_STYLES",
    "parse_size",
    "write_contact_sheet",
    "write_demo_dataset",
]
