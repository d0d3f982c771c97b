/* Drives hostd/bridge/json_scan.h on inputs from tests/test_bridge_scan.py (built with ASan).
 *
 * Input: records of "<decimal length>\n<bytes>". For each record it prints one line:
 *   "<valid 0|1> <key found 0|1> <unescaped hex or ->"
 * where the key looked up is "k" (only when the value is an object), and the unescaped text is
 * that of the value of "k" when it is a string.
 */
#include <stdio.h>
#include <stdlib.h>

#include "../../hostd/bridge/json_scan.h"

int main(void) {
    size_t len;
    while (scanf("%zu", &len) == 1) {
        if (getchar() != '\n') return 2;
        char *buf = malloc(len ? len : 1); /* exact size: ASan sees any read past the end */
        if (!buf || fread(buf, 1, len, stdin) != len) return 2;
        jspan v = {0}, k = {0};
        int valid = js_valid(buf, len, &v);
        int found = valid && js_is_object(v) && js_get(v, "k", &k);
        printf("%d %d ", valid, found);
        char *text = found && js_is_string(k) ? js_strdup(k) : NULL;
        if (text) {
            for (char *c = text; *c; c++) printf("%02x", (unsigned char)*c);
            printf("\n");
        } else {
            printf("-\n");
        }
        free(text);
        free(buf);
    }
    return 0;
}
