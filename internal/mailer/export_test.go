package mailer

import "mime"

type mimeWordDecoder = mime.WordDecoder
