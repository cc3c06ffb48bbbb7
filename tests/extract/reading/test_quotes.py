from extract.reading.quotes import locate_quote, normalised_chars, normalised_with_index


def test_quote_with_small_differences_is_located_by_its_longest_part():
    report = "FINDINGS:\nPancreas: 2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic vein.\nSpleen: Normal."
    ctx = locate_quote("2.1 cm hypoattenuating mass in the pancreatic tail; abutting splenic vein", report)
    assert ctx is not None and ctx.text == "2.1 cm hypoattenuating mass in the pancreatic tail"
    assert ctx.header == "Pancreas"
    assert ctx.sentence == "Pancreas: 2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic vein"
    assert locate_quote("Spleen: 1 cm cyst", report) is None
    cut = locate_quote("2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic veins", report)
    assert cut is not None and cut.text == "2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic"



def test_quote_location_is_the_same_for_ascii_and_other_reports():
    for text in ["", "  Liver:\t2 cm  LESION.\r\n\nSpleen: ok  ", "a\x1c\x1db  c\x0b", "X" * 3]:
        assert normalised_with_index(text) == normalised_chars(text)
    report = "FINDINGS:\nLiver:  2.2 cm   HYPODENSE lesion in segment 8. Spleen: normal.\nIMPRESSION: Cyst."
    ctx = locate_quote("2.2 cm hypodense lesion", report)
    assert (ctx.text, ctx.sentence, ctx.header) == ("2.2 cm   HYPODENSE lesion",
                                                    "Liver:  2.2 cm   HYPODENSE lesion in segment 8", "Liver")
    assert locate_quote("2.2 cm hypodense lesion", report) == ctx  # the report's index is reused
    assert locate_quote("Cyst", report).sentence == "IMPRESSION: Cyst"
    # Non-ASCII: casefolding changes lengths ("ß" -> "ss"); offsets still point into the NFKC report.
    other = "Leber:\u00a0Straße 2 cm Läsion; ﬁbrous CYST in segment 4."
    ctx = locate_quote("strasse 2 cm läsion", other)
    assert ctx.text == "Straße 2 cm Läsion" and ctx.sentence == "Leber: Straße 2 cm Läsion"
    assert locate_quote("fibrous cyst", other).text == "fibrous CYST"
