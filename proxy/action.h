/* Applies one compiled action to one decoded scalar value. The scrubbers (JSON, form,
 * headers) find values; this module decides what replaces them. It does not know about
 * encodings: input and output are decoded bytes. */
#ifndef AP_ACTION_H
#define AP_ACTION_H

#include <stdbool.h>

#include "pseudo.h"

/* Appends to <out> the replacement of the decoded value <in, n> under <act>:
 *   HASH         ap_pseudo_make;
 *   MASK         all but the last act->length characters (UTF-8 code points) become '*'
 *                (0: all of them; the configuration's default is 4);
 *   TRUNCATE_IP  the address with the host bits zeroed (act->v4bits / v6bits prefix),
 *                in canonical text form (a prefix of 0 erases the address; the
 *                configuration's defaults are 24 and 48); not one IP address: "";
 *   ROUND        the number rounded half away from zero to act->decimals places, printed
 *                with exactly that many decimals; a non-number becomes "";
 *   KEEP         the value unchanged.
 * A placeholder (ap_detect_placeholder for act->cls) is copied unchanged by every action. DROP is
 * the caller's business and is refused here (AP_ERR). <numeric> says the value was a JSON number;
 * *numeric_out is set when the result may be written back as a bare JSON number (input numeric and
 * output a valid JSON number; hex and base64url pseudonyms never are, so a field's type does not
 * depend on its hash). Returns AP_OK, or AP_ERR (memory, OpenSSL failure, DROP). */
int ap_action_apply(struct ap_pseudo *ps, const struct ap_action *act, const char *in, size_t n,
                    bool numeric, struct ap_buf *out, bool *numeric_out);

#endif
