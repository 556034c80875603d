/*
 * slug.c - tasklet's slugify() for embedded builds without Python.
 *
 * Produces the same slugs as tasklet.textutils.slugify for Latin text: lower-case ASCII letters and digits
 * separated by single dashes, with German umlauts spelled out ("Größe" -> "groesse") and common accented
 * letters reduced to their base letter. Other non-ASCII characters act as separators.
 *
 * Build the self-test with:  cc -std=c99 -Wall -Wextra -DSLUG_MAIN -o slug slug.c && ./slug
 */
#include <stddef.h>
#include <string.h>

struct mapping {
    unsigned int code_point;
    const char *ascii;
};

/* Sorted by code point for bsearch-free linear lookup; the table is small. */
static const struct mapping TRANSLIT[] = {
    {0x00C0, "a"},  {0x00C1, "a"},  {0x00C2, "a"},  {0x00C4, "ae"}, {0x00C5, "aa"}, {0x00C6, "ae"},
    {0x00C7, "c"},  {0x00C8, "e"},  {0x00C9, "e"},  {0x00CA, "e"},  {0x00CB, "e"},  {0x00CE, "i"},
    {0x00CF, "i"},  {0x00D1, "n"},  {0x00D4, "o"},  {0x00D6, "oe"}, {0x00D8, "oe"}, {0x00DB, "u"},
    {0x00DC, "ue"}, {0x00DF, "ss"}, {0x00E0, "a"},  {0x00E1, "a"},  {0x00E2, "a"},  {0x00E4, "ae"},
    {0x00E5, "aa"}, {0x00E6, "ae"}, {0x00E7, "c"},  {0x00E8, "e"},  {0x00E9, "e"},  {0x00EA, "e"},
    {0x00EB, "e"},  {0x00EE, "i"},  {0x00EF, "i"},  {0x00F1, "n"},  {0x00F4, "o"},  {0x00F6, "oe"},
    {0x00F8, "oe"}, {0x00FB, "u"},  {0x00FC, "ue"}, {0x0141, "l"},  {0x0142, "l"},
};

static const char *transliterate(unsigned int cp) {
    for (size_t i = 0; i < sizeof TRANSLIT / sizeof TRANSLIT[0]; i++) {
        if (TRANSLIT[i].code_point == cp) {
            return TRANSLIT[i].ascii;
        }
        if (TRANSLIT[i].code_point > cp) {
            break;
        }
    }
    return NULL;
}

/*
 * Decode one UTF-8 sequence at s; stores the code point and returns the number of bytes used.
 * Invalid bytes decode as U+FFFD and consume one byte, so the loop always makes progress.
 */
static size_t decode_utf8(const unsigned char *s, unsigned int *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xE0) == 0xC0 && (s[1] & 0xC0) == 0x80) {
        *cp = ((unsigned int)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if ((s[0] & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        *cp = ((unsigned int)(s[0] & 0x0F) << 12) | ((unsigned int)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    if ((s[0] & 0xF8) == 0xF0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) {
        *cp = ((unsigned int)(s[0] & 0x07) << 18) | ((unsigned int)(s[1] & 0x3F) << 12) |
              ((unsigned int)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return 4;
    }
    *cp = 0xFFFD;
    return 1;
}

/*
 * Write the slug of `text` into `out` (capacity `size`, always NUL-terminated when size > 0).
 * Returns the slug's length, or the length it would have had if `out` was too small (like snprintf).
 */
size_t slugify(const char *text, char *out, size_t size) {
    const unsigned char *s = (const unsigned char *)text;
    size_t length = 0;
    int pending_dash = 0;

    while (*s) {
        unsigned int cp;
        s += decode_utf8(s, &cp);
        const char *piece = NULL;
        char single[2] = {0, 0};

        if ((cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9')) {
            single[0] = (char)cp;
            piece = single;
        } else if (cp >= 'A' && cp <= 'Z') {
            single[0] = (char)(cp - 'A' + 'a');
            piece = single;
        } else {
            piece = transliterate(cp);
        }

        if (piece == NULL) {
            pending_dash = length > 0;
            continue;
        }
        if (pending_dash) {
            if (length + 1 < size) {
                out[length] = '-';
            }
            length++;
            pending_dash = 0;
        }
        for (; *piece; piece++, length++) {
            if (length + 1 < size) {
                out[length] = *piece;
            }
        }
    }
    if (size > 0) {
        out[length < size ? length : size - 1] = '\0';
    }
    return length;
}

#ifdef SLUG_MAIN
#include <stdio.h>

static int check(const char *input, const char *expected) {
    char buffer[64];
    size_t n = slugify(input, buffer, sizeof buffer);
    int ok = strcmp(buffer, expected) == 0 && n == strlen(expected);
    printf("%s  %-28s -> %s\n", ok ? "ok  " : "FAIL", input, buffer);
    return ok;
}

int main(void) {
    int ok = 1;
    ok &= check("Hello, World!", "hello-world");
    ok &= check("Größe ändern", "groesse-aendern");
    ok &= check("Crème brûlée", "creme-brulee");
    ok &= check("  --leading and trailing--  ", "leading-and-trailing");
    ok &= check("任务 list", "list");
    ok &= check("", "");

    char tiny[6];
    size_t needed = slugify("truncate me please", tiny, sizeof tiny);
    int truncated_ok = needed == strlen("truncate-me-please") && strcmp(tiny, "trunc") == 0;
    printf("%s  truncation keeps a terminated prefix\n", truncated_ok ? "ok  " : "FAIL");
    ok &= truncated_ok;
    return ok ? 0 : 1;
}
#endif
