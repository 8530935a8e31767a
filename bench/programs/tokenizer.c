/* Branchy tokenizer: a character-at-a-time state machine over up to 1500
 * bytes of C-like source text (identifiers, decimal and hex numbers, string
 * literals with escapes, line and block comments, one- and two-character
 * operators), as a protocol or filter-language lexer in a packet program
 * would be written. Character classes are tested with comparisons rather
 * than tables, so the program is all compares and jumps.
 *
 * Result: a hash over (kind, length) of every token, mixed with the count of
 * each kind and the final state.
 */
#include "bench.h"

enum state {
	S_START,
	S_IDENT,
	S_NUMBER,
	S_ZERO,      /* read a leading '0': may start "0x" */
	S_HEX,
	S_STRING,
	S_ESCAPE,    /* after a backslash inside a string */
	S_SLASH,     /* read '/': comment or operator */
	S_LINE_COMMENT,
	S_BLOCK_COMMENT,
	S_BLOCK_STAR, /* read '*' inside a block comment */
	S_OP,        /* read an operator character that may double ("==", "&&", "->") */
};

enum kind { K_IDENT, K_NUMBER, K_STRING, K_COMMENT, K_OP, K_PUNCT, K_ERROR, K_COUNT };

struct lexer {
	__u32 hash;
	__u32 counts[K_COUNT];
};

static __always_inline int is_alpha(__u8 c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static __always_inline int is_digit(__u8 c)
{
	return c >= '0' && c <= '9';
}

static __always_inline int is_hex(__u8 c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static __always_inline int is_space(__u8 c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static __always_inline int is_op(__u8 c)
{
	return c == '=' || c == '!' || c == '<' || c == '>' || c == '&' || c == '|' ||
	       c == '+' || c == '-' || c == '*' || c == '%' || c == '^';
}

static __always_inline int is_punct(__u8 c)
{
	return c == '(' || c == ')' || c == '{' || c == '}' || c == '[' || c == ']' ||
	       c == ';' || c == ',' || c == '.' || c == ':' || c == '?' || c == '~';
}

static __always_inline void emit(struct lexer *lx, enum kind k, __u32 len)
{
	lx->counts[k]++;
	lx->hash = (lx->hash ^ (k << 16 | len)) * 0x01000193;
}

SEC("bench")
__u64 tokenizer(struct pkt *p)
{
	__u32 len = p->len;
	if (len > MAX_PKT)
		len = MAX_PKT;

	struct lexer lx = { .hash = 0x811c9dc5 ^ p->seed };
	enum state s = S_START;
	__u32 start = 0;
	__u8 prev = 0;

	for (__u32 i = 0; i <= len; i++) {
		/* One extra step with c == 0 flushes the last token. */
		__u8 c = i < len ? p->data[i] : 0;
		int again;
		do {
			again = 0;
			switch (s) {
			case S_START:
				start = i;
				if (c == 0 || is_space(c))
					break;
				if (is_alpha(c))
					s = S_IDENT;
				else if (c == '0')
					s = S_ZERO;
				else if (is_digit(c))
					s = S_NUMBER;
				else if (c == '"')
					s = S_STRING;
				else if (c == '/')
					s = S_SLASH;
				else if (is_op(c)) {
					s = S_OP;
					prev = c;
				} else if (is_punct(c))
					emit(&lx, K_PUNCT, 1);
				else
					emit(&lx, K_ERROR, 1);
				break;
			case S_IDENT:
				if (is_alpha(c) || is_digit(c))
					break;
				emit(&lx, K_IDENT, i - start);
				s = S_START;
				again = 1;
				break;
			case S_ZERO:
				if (c == 'x' || c == 'X') {
					s = S_HEX;
					break;
				}
				s = S_NUMBER;
				again = 1;
				break;
			case S_NUMBER:
				if (is_digit(c))
					break;
				emit(&lx, K_NUMBER, i - start);
				s = S_START;
				again = 1;
				break;
			case S_HEX:
				if (is_hex(c))
					break;
				emit(&lx, K_NUMBER, i - start);
				s = S_START;
				again = 1;
				break;
			case S_STRING:
				if (c == '\\')
					s = S_ESCAPE;
				else if (c == '"') {
					emit(&lx, K_STRING, i + 1 - start);
					s = S_START;
				} else if (c == '\n' || c == 0) {
					emit(&lx, K_ERROR, i - start);
					s = S_START;
				}
				break;
			case S_ESCAPE:
				s = c == 0 ? S_START : S_STRING;
				break;
			case S_SLASH:
				if (c == '/')
					s = S_LINE_COMMENT;
				else if (c == '*')
					s = S_BLOCK_COMMENT;
				else {
					emit(&lx, K_OP, 1);
					s = S_START;
					again = 1;
				}
				break;
			case S_LINE_COMMENT:
				if (c == '\n' || c == 0) {
					emit(&lx, K_COMMENT, i - start);
					s = S_START;
				}
				break;
			case S_BLOCK_COMMENT:
				if (c == '*')
					s = S_BLOCK_STAR;
				else if (c == 0) {
					emit(&lx, K_ERROR, i - start);
					s = S_START;
				}
				break;
			case S_BLOCK_STAR:
				if (c == '/') {
					emit(&lx, K_COMMENT, i + 1 - start);
					s = S_START;
				} else if (c == 0) {
					emit(&lx, K_ERROR, i - start);
					s = S_START;
				} else if (c != '*')
					s = S_BLOCK_COMMENT;
				break;
			case S_OP:
				/* "==", "!=", "<=", ">=", "&&", "||", "++", "--", "->", "<<", ">>" */
				if (c == '=' || (c == prev && (c == '&' || c == '|' || c == '+' ||
							     c == '-' || c == '<' || c == '>')) ||
				    (prev == '-' && c == '>')) {
					emit(&lx, K_OP, 2);
					s = S_START;
				} else {
					emit(&lx, K_OP, 1);
					s = S_START;
					again = 1;
				}
				break;
			}
		} while (again);
	}

	__u32 h = lx.hash;
	for (int k = 0; k < K_COUNT; k++)
		h = (h ^ lx.counts[k]) * 0x01000193;
	return h ^ s;
}
