#include "line.h"

#include <string.h>

mpc_line_status mpc_line_next(const char *data, size_t len, int strict, size_t *line_len, size_t *consumed)
{
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            if (i > 0 && data[i - 1] == '\r') {
                *line_len = i - 1;
                *consumed = i + 1;
                return MPC_LINE_OK;
            }
            *line_len = i;
            *consumed = i + 1;
            return strict ? MPC_LINE_BARE : MPC_LINE_OK;
        }
        if (data[i] == '\r' && strict && i + 1 < len && data[i + 1] != '\n') {
            *line_len = i;
            *consumed = i + 1;
            return MPC_LINE_BARE;
        }
    }
    return MPC_LINE_MORE;
}
