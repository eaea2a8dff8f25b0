"""Write teran_es/collections/data/cldr-en-emoji.json from an installed CLDR (Debian's
unicode-cldr-core): the English emoji annotations, territory names, and the names of the
subdivisions that have a flag among OpenMoji's drawings or the emoji package's emoji.

    python scripts/bundle_cldr.py [/usr/share/unicode/cldr/common]
"""

from __future__ import annotations

import json
import sys

import emoji

from teran_es.collections.emoji_codes import code_to_text, subdivision_flag_code
from teran_es.collections.emoji_sources import BUNDLED_CLDR, DEBIAN_CLDR_DIR, cldr_subset, load_cldr
from teran_es.collections.openmoji import installed_source, svg_codes


def main() -> None:
    common = sys.argv[1] if len(sys.argv) > 1 else str(DEBIAN_CLDR_DIR)
    cldr = load_cldr(common)
    if cldr is None:
        sys.exit(f"no CLDR English annotations under {common}")
    texts = [code_to_text(code) for code in svg_codes(installed_source().svg_dir)] + list(emoji.EMOJI_DATA)
    flagged = {code for code in map(subdivision_flag_code, texts) if code}
    BUNDLED_CLDR.write_text(json.dumps(cldr_subset(cldr, flagged), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{BUNDLED_CLDR}: CLDR {cldr.version}, {len(cldr.tts)} names, {len(flagged)} subdivisions")


if __name__ == "__main__":
    main()
