"""The fixed rules the converter adds when a schema uses them: JSON's primitives and the string
formats."""

from __future__ import annotations

from ._numbers import INT_DIGITS

_WS = r'ws ::= ( " " | "\n" [ \t]{0,16} )?'
# Characters a JSON string holds unescaped (DEL left out), and the escapes it may use (no
# surrogate \u escapes: a pair would decode to one character and break length counts).
_CHAR_RULE = (r'char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CefEF] [0-9a-fA-F]{3} '
              r'| [dD] [0-7] [0-9a-fA-F]{2} ) )')
PRIMITIVES = {
    "ws": _WS,
    "char": _CHAR_RULE,
    "plain-char": r'plain-char ::= [^"\\\x7F\x00-\x1F]',
    "string": r'string ::= "\"" char* "\""',
    "integer": rf'integer ::= "-"? ( "0" | [1-9] [0-9]{{0,{INT_DIGITS - 1}}} )',
    "number": r'number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?',
    "boolean": r'boolean ::= "true" | "false"',
    "null": r'null ::= "null"',
    "value": r"value ::= object | array | string | number | boolean | null",
    "object": r'object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"',
    "array": r'array ::= "[" ws ( value ( ws "," ws value )* ws )? "]"',
}
PRIMITIVE_DEPS = {
    "string": ("char",), "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("ws", "string", "value"), "array": ("ws", "value"),
}

_D28 = '( "0" [1-9] | "1" [0-9] | "2" [0-8] )'
FORMAT_RULES = {
    # Years 1000-2999 keep the grammar short and every date real (Feb 29 in leap years only).
    "date": (
        "date ::= year \"-\" ( ( \"01\" | \"03\" | \"05\" | \"07\" | \"08\" | \"10\" | \"12\" ) \"-\" "
        f"( {_D28} | \"29\" | \"30\" | \"31\" ) | ( \"04\" | \"06\" | \"09\" | \"11\" ) \"-\" "
        f"( {_D28} | \"29\" | \"30\" ) | \"02-\" {_D28} ) | leap-year \"-02-29\"\n"
        'year ::= [12] [0-9]{3}\n'
        'leap-year ::= [12] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | "1200" | "1600" | "2000" | "2400" '
        '| "2800"'
    ),
    "time": 'time ::= ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
            '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "date-time": 'date-time ::= date "T" time',
    "uuid": 'uuid ::= [0-9a-f]{8} "-" [0-9a-f]{4} "-" [1-8] [0-9a-f]{3} "-" [89ab] [0-9a-f]{3} "-" [0-9a-f]{12}',
    "email": 'email ::= [a-zA-Z0-9_+-]{1,32} ( "." [a-zA-Z0-9_+-]{1,32} ){0,3} "@" [a-zA-Z0-9] [a-zA-Z0-9-]{0,30} '
             '( "." [a-zA-Z0-9] [a-zA-Z0-9-]{0,30} ){0,3} "." [a-zA-Z]{2,10}',
    # A scheme and characters a URI may hold unescaped (a '%' always starts an escape).
    "uri": 'uri ::= [a-zA-Z] [a-zA-Z0-9+.-]{0,15} ":" ( "//" )? '
           '( [a-zA-Z0-9._~:/?#@!$&\'()*+,;=-] | "%" [0-9a-fA-F]{2} ){1,200}',
    "ipv4": 'ipv4 ::= octet "." octet "." octet "." octet\n'
            'octet ::= "25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9]',
}
FORMAT_DEPS = {"date-time": ("date", "time")}
