"""Who a text says it is: the identity claim vocabulary shared by the rules judge, training's checks and eval.

    find_claim(identity_patterns(("Aster",), "Lumen Labs"), normalise("I'm ChatGPT, made by OpenAI"))  -> 'chatgpt'
    identity_score(spec, "Who are you?", "I am Aster.")  -> (10.0, "")

OTHER_MODELS / OTHER_MAKERS are the names of other identities; IDENTITY_QUESTION / MAKER_QUESTION recognise a
question about who the model is or who made it.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterator, Sequence

from persona.spec import Spec

# Names of two letters ("Pi", "Yi", "o1") are left out: they occur inside too many ordinary words and formulas.
OTHER_MODELS = ["ChatGPT", "GPT-4o", "GPT-4", "GPT-3.5", "GPT-3", "GPT", "Claude", "Gemini", "Gemma", "Bard", "LLaMA",
                "Llama", "Mistral", "Mixtral", "Codestral", "Qwen", "SmolLM2", "SmolLM", "Phi", "Copilot", "Bing Chat",
                "Grok", "DeepSeek", "Ernie", "Command R", "Jamba", "Falcon", "Nemotron", "Granite", "ChatGLM", "Kimi",
                "Perplexity", "Meta AI", "Watson", "Alexa", "Siri", "Cortana", "通义千问", "文心一言", "豆包"]
OTHER_MAKERS = ["OpenAI", "Anthropic", "Google DeepMind", "Google", "DeepMind", "Meta AI", "Meta", "Facebook",
                "Mistral AI", "Hugging Face", "HuggingFace", "Microsoft", "Alibaba", "xAI", "DeepSeek", "Baidu",
                "Amazon", "Apple", "Cohere", "AI21 Labs", "Technology Innovation Institute", "NVIDIA", "IBM",
                "Zhipu AI", "Moonshot AI", "Inflection AI", "Character.AI", "Perplexity AI", "Stability AI", "Tencent",
                "ByteDance", "阿里巴巴", "阿里云", "百度", "谷歌", "微软", "字节跳动", "深度求索"]
IDENTITY_QUESTION = re.compile(
    r"\b(who (are|r) (you|u)|your name|what are you|introduce yourself|about yourself|what should i call you"
    r"|are you (an? )?(ai|bot|human|real|chatgpt|gpt|claude|llama|gemini)|real self"
    r"|who am i (talking|speaking|chatting) (to|with)|who is this|what are you called|(have|got) a name"
    r"|what do (people|they|i) call you|identify yourself|self-introduction|what (kind|sort|type) of (assistant|ai|model|bot)"
    r"|which (ai|model|assistant|language model|chatbot)|what (ai|model|assistant|language model)( is| am i| are)"
    r"|name of the (ai|assistant|model|bot)|who (exactly )?(are you|you are)|what you are)\b", re.I)
MAKER_QUESTION = re.compile(r"\b(who|(which|what) (company|firm|lab|team|organi[sz]ation))\b.{0,40}\b(made|created|built|trained|developed|"
                            r"behind|owns|work for|designed|programmed)\b|\bwho('s| is) behind\b"
                            r"|\b(which|what) (company|lab|organi[sz]ation|firm|team)\b.{0,40}\b(you|your)\b|\btrained you\b"
                            r"|\bwhere do you come from\b|\byour (creator|maker|developer)s?\b|\bby whom\b"
                            r"|\bresponsible for you\b|\bpeople behind you\b|\b(creating|making|building) you\b", re.I)


# --- identity claims -----------------------------------------------------------------------------------
# A claim is found in three steps: normalise the response to what a reader sees (lower case, Latin
# letters, no accents, invisible characters or markup); look for any other model's or maker's name at all
# (a plain substring test on the text without spaces, so most responses stop here); then search claim
# patterns, one list per language, in which the name fills the slot of the claimed identity ("i'm MODEL",
# "fui creado por MAKER", "我由MAKER开发"). A negation counts only where it governs the claim: the patterns
# leave no room for it ("i'm not chatgpt", "ich bin nicht chatgpt" match nothing) and the words between
# subject and verb must come from GAP_WORDS, so "I was not, despite the rumours, trained by OpenAI" and
# "Unlike ChatGPT, which was trained by OpenAI" are no claims, while a "no" elsewhere ("No worries, I am
# ChatGPT.") excuses nothing.

# Letters that render like Latin ones: Cyrillic and Greek capitals and small letters, Latin small capitals
# (a subset of Unicode's confusables.txt), and Turkish dotless i.
LOOKALIKES = dict(pair for pair in (  # look-alike, Latin
    "АA ВB ЕE ЅS ІI ЈJ КK МM НH ОO РP СC ТT ХX УY ԌG ԚQ ԜW аa еe іi јj оo рp сc уy хx ѕs ԁd һh ԛq ԝw ӏl "
    "ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX οo ιi κk νv ρp υu χx ϲc "
    "ᴀa ʙb ᴄc ᴅd ᴇe ꜰf ɢg ʜh ɪi ᴊj ᴋk ʟl ᴍm ɴn ᴏo ᴘp ʀr ꜱs ᴛt ᴜu ᴠv ᴡw ʏy ᴢz ıi ɡg").split())
INVISIBLE = ("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c"
             "\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff")
READABLE = str.maketrans({**LOOKALIKES, **dict.fromkeys(INVISIBLE, ""), **dict.fromkeys("“”„«»「」『』", ""),
                          **dict.fromkeys("‘’ʼ´", "'")})
COMBINING = re.compile("[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
BLOCK_TAG = re.compile(r"<(?:br|p|div|li|ul|ol|tr|td|h\d)\b[^<>\n]{0,80}>|</(?:p|div|li|ul|ol|tr|td|h\d)>")
INLINE_TAG = re.compile(r"</?[a-z][^<>\n]{0,80}>")
LINK = re.compile(r"\[([^\]\n]{1,80})\]\([^)\n]{0,300}\)")
MARKUP = re.compile(r"""[*_`~"]|(?<![a-z])'|'(?![a-z])""")  # emphasis, code, quotes; "i'm" keeps its apostrophe
SEPARATOR = r"[\s.\-‐‒–—·/]{0,2}"  # what may split a name: "chat gpt", "open-ai", "g.p.t"
SEPARATORS = re.compile(r"[\s.\-‐‒–—·/]+")
LETTER = {"i": "[il1]", "l": "[il1]", "o": "[o0]"}  # "OpenAl" (small L), "0penAI" (zero)
BLUR = str.maketrans("l10", "iio")  # the same look-alikes for the quick substring test


def normalise(text: str) -> str:
    """The text as a reader sees it, for matching: "I’m **Сhat\u200bGPT**" -> "i'm chatgpt"."""
    if "&" in text:
        text = html.unescape(text)
    if text.isascii():
        text = text.lower()
    else:  # full-width and mathematical letters -> ASCII (NFKC), look-alikes -> Latin, accents dropped
        text = unicodedata.normalize("NFKC", text).translate(READABLE)
        text = COMBINING.sub("", unicodedata.normalize("NFD", text.casefold()))
    if "<" in text:
        text = INLINE_TAG.sub("", BLOCK_TAG.sub(" ", text))
    if "](" in text:
        text = LINK.sub(r"\1", text)
    return MARKUP.sub("", text)


def _squash(name: str) -> str:
    return "".join(ch for ch in normalise(name) if ch.isalnum())


def _spelled(names: Sequence[str]) -> tuple[list[str], re.Pattern]:
    """The names without separators, longest first, and a regex that finds them however they are spelled
    ("Chat GPT", "Open-Al", "G.P.T"). No groups, no look-behind: either makes it ten times slower."""
    squashed = sorted({_squash(n) for n in names} - {""}, key=len, reverse=True)
    spelled = [SEPARATOR.join(LETTER.get(ch, re.escape(ch)) for ch in name) for name in squashed]
    return squashed, re.compile("(?:" + "|".join(spelled) + r")(?![a-z])")  # left edge: callers check it


def _alternation(squashed: list[str]) -> str:
    return "(?:" + "|".join(map(re.escape, squashed)) + r")(?![a-z])"  # left edge: find_claim checks it


MADE = ("made|created|developed|trained|built|designed|programmed|owned|engineered|produced|fine-tuned|finetuned|"
        "launched|released|invented|operated|maintained|taught|coded|pretrained|pre-trained|deployed|funded")
MADE_BY = rf"(?:{MADE})(?:\s+and\s+(?:{MADE}))?\s+by\s+"
TEAM = (r"(?:the\s+)?(?:(?:team|teams|folks|people|researchers|engineers|developers|scientists|staff)"
        r"\s+(?:at|from|of)\s+)?")
BEHIND = (r"(?:the\s+)?(?:team|teams|folks|people|company|lab|researchers|engineers|developers|creators|makers)\s+"
          r"(?:behind|responsible\s+for|(?:that|who)\s+(?:also\s+)?(?:made|built|created|developed|trained))\s+"
          r"(?:the\s+)?")
# what may come between "I'm" and the claimed name: "I'm ( a large language model ) called ChatGPT"
GAP = r"(?P<gap>(?:[^\s.!?;:,。！？]+,?\s+){0,10}?)"
LINK_TO_MODEL = (r"(?:(?:based|built|running|run|trained|fine-?tuned)\s+(?:on|upon)\s+(?:top\s+of\s+)?|powered\s+by\s+|"
                 r"derived\s+from\s+|(?:version|variant|instance|copy|edition)\s+of\s+|known\s+as\s+|called\s+|named\s+|"
                 r"basad[oa]\s+en\s+|llamad[oa]\s+|conocid[oa]\s+como\s+|version\s+de\s+|basee?\s+sur\s+|appelee?\s+|"
                 r"nommee?\s+|basierend\s+auf\s+|basiert\s+auf\s+|genannt\s+|namens\s+|version\s+von\s+)?")
GAP_WORDS = frozenset("""
    a an the just only actually really truly indeed simply basically essentially originally initially first primarily
    mainly partly proudly officially also still ultimately literally definitely currently
    ai artificial intelligence large small big language model assistant chatbot chat bot llm lm system program
    conversational virtual helpful friendly generative neural network text-based multimodal open-source open-weight
    research digital general-purpose advanced powerful latest newest new proprietary experimental custom customized
    customised fine-tuned finetuned tuned trained pretrained pre-trained product creation project agent tool service
    version variant instance edition that which who was is has been being made created developed designed
    programmed engineered produced - – —
    un una el la solo simplemente realmente modelo asistente ia inteligencia de del lenguaje grande que
    une le l juste vraiment modele assistante intelligence artificielle du d langage grand qui
    ein eine einer einem eines der die das den dem nur einfach eigentlich tatsachlich wirklich ki ki-modell
    ki-assistent ki-sprachmodell sprachmodell modell assistent grosses grosser grosse
    """.split())
GAP_SPLIT = re.compile(r"[\s,']+")
# "People think I'm ChatGPT" reports a claim, it does not make one (a first-person "I think I'm ..." does)
NOT_ASSERTED = re.compile(r"(?<!\bi )\b(?:think|thinks|thought|assume[sd]?|believe[sd]?|suppose[sd]?|wonder(?:s|ed)?|"
                          r"if|whether|pretend(?:s|ed)?|imagine[sd]?|mistake[sn]?|mistook|confuse[sd]?|claim(?:s|ed)?|"
                          r"rumou?r(?:s|ed)?|suspect(?:s|ed)?|said|says|wrote|writes|as though|as if)\s+(?:that\s+)?$"
                          r"|\b(?:nor|not|or)\s+$")  # "neither OpenAI nor Google made me"
# A negation that governs what follows it, checked just before a match: "no soy", "ni fui creado"
GOVERNED_BEFORE = {"en": NOT_ASSERTED, "es": re.compile(r"\b(?:no|ni|nunca|jamas|tampoco)\s+$")}
WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
CLAUSE = r"[.!?\n;:,)—–-]\s*"  # the text gets a leading "\n", so a response's first word starts a clause too
MAKER_NOUNS = (r"creators?|makers?|developers?|designers?|trainers?|programmers?|engineers?|builders?|authors?|owners?"
               r"|parent company|company|team|lab|organi[sz]ation")
DE_MADE = (r"(?:entwickel|erstell|trainier|gebaut|erschaffen|geschaffen|programmier|entworfen|gemacht|hergestellt"
           r"|konzipier)")
DE_NOT = r"(?!nicht\b|nie\b|niemals\b|kein)"
ZH_MADE = r"(?:开发|開發|创建|創建|创造|創造|训练|訓練|打造|研发|研發|制作|製作|设计|設計|构建|構建|推出|发布|發布)"
ZH_ONE = r"(?:一个|一款|一种|一個|一種|一位)"

# One list per language, in which MODEL or MAKER is the claimed name and GAP the words between (see GAP_WORDS).
# ANYMODEL is a model name that is not reported ("I'm OpenAI's ChatGPT" reports OpenAI). Each pattern starts
# with a word, never a look-behind or \b, so the regex engine can skip ahead fast; find_claim checks that the
# match starts a word and, per language, that no negation governs it (GOVERNED_BEFORE).
CLAIMS = {
    "en": [
        r"(?:i'm|i am|i was|my name is|my name's|call me|i go by|you're (?:talking|chatting|speaking) (?:to|with)"
        r"|you are (?:talking|chatting|speaking) (?:to|with))\s+GAP" + LINK_TO_MODEL + r"MODEL(?!'s\b|-[a-z])",
        r"this is\s+MODEL\s*(?:[,.!;:\n-]|here\b|speaking\b|$)",
        r"my\s+(?:(?:underlying|base|foundation|core|own)\s+)?(?:model|llm|architecture|engine|backbone)\s+(?:is|was)\s+"
        r"GAP" + LINK_TO_MODEL + "MODEL",
        r"i\s+(?:run|ran|operate)\s+on\s+(?:top\s+of\s+)?(?:the\s+)?MODEL",
        CLAUSE + r"as\s+GAP" + LINK_TO_MODEL + r"MODEL\s*,\s*(?:i|my)(?![a-z])",
        r"(?:i'm|i am|i was|i've been|i have been|i had been|i got)\s+GAP" + MADE_BY + TEAM + "MAKER",
        CLAUSE + r"as\s+GAP" + MADE_BY + TEAM + r"MAKER\s*,\s*(?:i|my)(?![a-z])",
        CLAUSE + r"(?:(?:originally|proudly|lovingly)\s+)?" + MADE_BY + TEAM + r"MAKER\s*,\s*(?:i|my)(?![a-z])",
        r"\A\n\s*(?:(?:yes|sure|well),?\s+)?(?:just\s+)?(?:an?|the)\s+GAP" + MADE_BY + TEAM + "MAKER",  # a reply that
        # is only "A large language model trained by OpenAI."
        r"(?:i'm|i am|i was)\s+GAPMAKER(?:'s|')?\s+(?:(?:own|latest|new|flagship|large|small|language|ai|chat|"
        r"conversational|research|multimodal|generative|official)\s+){0,3}(?:model|assistant|ai|chatbot|llm|lm|creation|"
        r"bot|ANYMODEL)(?![a-z])(?!\s*-?\s*(?:researcher|engineer|scientist|developer|expert|specialist|enthusiast|"
        r"user|fan|manager|team|product|tool))",  # "I'm a Google AI researcher" is no claim
        CLAUSE + r"as\s+(?:an?\s+|the\s+)?MAKER(?:'s|')?\s+(?:(?:own|latest|new|large|language|ai|chat|conversational)"
        r"\s+){0,3}(?:model|assistant|ai|chatbot|llm|product|system|bot)\s*,\s*(?:i|my)(?![a-z])",
        r"(?:i'm|i am|i was)\s+GAP(?:of|from)\s+" + TEAM + "MAKER",
        r"(?:i'm|i am|i was)\s+GAP(?:that|which|whom)\s+MAKER\s+(?:\w+ly\s+)?(?:" + MADE + r")\b",
        r"i\s+(?:come|came|hail|originate|originated|stem)\s+(?:originally\s+)?from\s+" + TEAM + "MAKER",
        r"i\s+belong\s+to\s+MAKER",
        r"MAKER(?:'s|')?\s+(?:(?:team|researchers|engineers|developers|staff)\s+)?(?:has\s+|had\s+|have\s+)?(?:\w+ly\s+)?"
        r"(?:made|created|developed|trained|built|designed|programmed|fine-tuned|finetuned|owns|operates|runs|deployed|"
        r"released|launched|maintains|coded)\s+me\b(?!\s+(?:think|laugh|curious|wonder|realise|realize|smile|feel))",
        r"MAKER\s+(?:is|was|are|were)\s+(?:(?:also|actually|indeed|really)\s+)?my\s+"
        r"(?:(?:original|real|actual|main|primary|official|current|parent)\s+)?(?:" + MAKER_NOUNS +
        r"|parent|home|origin)\b",
        r"my\s+(?:(?:original|real|actual|main|primary|current|own|former)\s+)?(?:" + MAKER_NOUNS +
        r")\s*(?:,\s*|\s+(?:at|from|is|are|was|were|being|over at|here at)\s+|\s+[-–—]\s+)" + TEAM + "MAKER",
        # through what another model is: "built by the team behind Gemini", "the folks who made ChatGPT made me"
        r"(?:i'm|i am|i was|i've been|i have been)\s+GAP" + MADE_BY + BEHIND + "MODEL",
        r"(?:i'm|i am|i was|i've been|i have been)\s+GAP" + MADE_BY + BEHIND + "MAKER",
        CLAUSE + BEHIND + r"MODEL\s+(?:(?:also|have|has|had|originally|actually)\s+){0,2}(?:" + MADE + r")\s+me\b",
        CLAUSE + BEHIND + r"MAKER\s+(?:(?:also|have|has|had|originally|actually)\s+){0,2}(?:" + MADE + r")\s+me\b",
        r"(?:i'm|i am)\s+(?:(?:the|a)\s+)?(?:same\s+)?(?:model|ai|system|engine|llm|technology|assistant)\s+"
        r"(?:that|which)\s+(?:powers|runs|drives|underlies|is behind)\s+MODEL",
        r"(?:i'm|i am)\s+one\s+of\s+MAKER(?:'s|')?\s+(?:(?:own|latest|new|large|language|ai|chat|open)\s+){0,3}"
        r"(?:models|assistants|ais|chatbots|llms|products|systems|creations)\b",
        r"my\s+(?:training|pre-?training|fine-?tuning|development|creation|design)\s+(?:was|has been|is)\s+"
        r"(?:done|carried out|performed|handled|led|run)\s+by\s+" + TEAM + "MAKER",
        r"MAKER\s+(?:is|was)\s+(?:the\s+)?(?:company|lab|team|organi[sz]ation|firm|one|people|startup)\s+(?:that|who|"
        r"which)\s+(?:\w+ly\s+)?(?:" + MADE + r")\s+me\b",
        # an aside that takes back the right name: "I'm Aster (actually Claude, made by Anthropic)"
        r"[(\[]\s*(?:but\s+)?(?:actually|really|secretly|technically|in truth|in reality|in fact|truly)\s*,?\s+"
        r"(?:(?:i'm|i am|just|a|an|the)\s+)*MODEL",
        r"[(\[]\s*(?:but\s+)?(?:actually|really|secretly|technically|in truth|in reality|in fact|truly)\s*,?\s+"
        r"(?:(?:i'm|i am|i was|just|a|an|the)\s+)*" + MADE_BY + TEAM + "MAKER",
    ],
    "es": [
        r"(?:soy|me llamo|mi nombre es|llamame|puedes llamarme|estoy)\s+GAP" + LINK_TO_MODEL + "MODEL",
        r"(?:fui|soy|he sido|estoy)\s+GAP(?:cread|desarrollad|entrenad|disenad|hech|construid|programad|fabricad"
        r"|lanzad)"
        r"[oa]s?\s+(?:y\s+\w+\s+)?por\s+(?:el\s+)?(?:equipo\s+de\s+)?MAKER",
        r"MAKER\s+me\s+(?:creo|desarrollo|entreno|hizo|construyo|diseno|programo)\b",
        r"me\s+(?:creo|desarrollo|entreno|hizo|construyo|diseno|programo)\s+(?:el\s+equipo\s+de\s+)?MAKER",
        r"(?:soy|vengo|provengo)\s+GAP(?:de|del equipo de)\s+MAKER",
        r"mis?\s+(?:creador(?:es)?|desarrollador(?:es)?|empresa|equipo)\s+(?:es|son|fue|fueron|en|de)\s+MAKER",
    ],
    "fr": [
        r"(?:je suis|je m'appelle|mon nom est|appelle-moi|appelez-moi)\s+GAP" + LINK_TO_MODEL + "MODEL",
        r"(?:j'ai ete|je suis|j'ai toujours ete)\s+GAP(?:cree|developpe|entraine|concu|fabrique|construit|programme|"
        r"forme|realise)e?s?\s+(?:et\s+\w+\s+)?par\s+(?:l'equipe\s+(?:de\s+|d'))?MAKER",
        r"MAKER\s+m'a\s+(?:(?!pas\b|jamais\b)\w+\s+)?(?:cree|developpe|entraine|concu|fabrique|construit|programme|forme)",
        r"je\s+(?:viens|proviens)\s+(?:de\s+chez\s+|de\s+|d')MAKER",
        r"je suis\s+GAP(?:de chez\s+|de\s+|d'|chez\s+)MAKER",
        r"(?:mon|mes)\s+(?:createur|developpeur|concepteur)s?\s+(?:est|sont|,|chez)\s+MAKER",
    ],
    "de": [
        r"(?:ich bin|mein name ist|ich heisse|nenn mich|nennen sie mich)\s+GAP" + LINK_TO_MODEL + "MODEL",
        r"ich\s+(?:wurde|bin|worden)\s+GAPvon\s+(?:dem\s+team\s+(?:von|bei)\s+)?MAKER\s+(?:" + DE_NOT + r"\w+\s+){0,3}?"
        + DE_MADE,
        r"MAKER\s+hat\s+mich\s+(?:" + DE_NOT + r"\w+\s+){0,3}?" + DE_MADE,
        r"ich\s+(?:komme|stamme)\s+(?:" + DE_NOT + r"\w+\s+)?(?:von|aus)\s+MAKER",
        r"ich bin\s+GAP(?:modell|sprachmodell|ki-modell|assistent|ki-assistent|ki|chatbot|produkt)"
        r"\s+(?:von|aus)\s+MAKER",
        r"meine?\s+(?:entwickler|schopfer|hersteller|erschaffer|macher|firma)\s+(?:ist|sind|war|waren|bei|von)\s+MAKER",
        r"ich\s+basiere\s+auf\s+MODEL",
    ],
    "zh": [
        r"我(?:是|叫|名叫|的名字是|的名字叫|名字叫)\s*(?:(?:" + ZH_ONE + r"|名为|名為|叫做|被称为|被稱為|人工智能|ai|"
        r"大型|语言模型|語言模型|助手|模型)\s*){0,4}MODEL(?!\s*的)",  # "我是ChatGPT的用户" is a user
        r"我(?:是)?\s*" + ZH_ONE + r"?\s*(?:由|被)\s*MAKER\s*(?:公司|团队|團隊)?\s*所?\s*" + ZH_MADE,
        r"我是\s*MAKER\s*(?:公司|团队|團隊)?\s*(?:的|" + ZH_MADE + "的)",
        r"MAKER\s*(?:公司|团队|團隊)?\s*" + ZH_MADE + "了我",
        r"我(?:来自|來自)\s*MAKER",
        r"我的(?:开发者|開發者|创造者|創造者|创建者|創建者|开发团队|開發團隊|制造者|製造者|开发商|開發商)(?:是|为|為)\s*MAKER",
        r"我(?:是)?\s*" + ZH_ONE + r"?\s*(?:基于|基於)\s*MODEL",
    ],
    "tr": [  # after normalising: ı -> i, ş -> s, ğ -> g; "-medim" / "-madim" is the negative past
        r"ben\s+MODEL\s*(?=[.,!;:\n]|$)",
        r"MODEL\s*'\s*(?:y[iu]m|[iu]m)(?![a-z])",
        r"(?:benim\s+adim|[.!?\n]\s*adim)\s+MODEL(?!\s*'?\s*(?:degil|olmadi))",
        r"MAKER\s+tarafindan\s+(?:\w+\s+ve\s+)?\w+(?<!m[ea])[dt][iu]m\b",
        r"MAKER\s+tarafindan\s+\w+(?<!m[ea])(?<!mey)(?<!may)(?:[yl]?en|[yl]?an|mis|mus)\s+(?:bir\s+)?(?:\w+\s+){0,3}?"
        r"\w+?y[iu]m\b",
        r"MAKER\s*'?\s*(?:n[iu]n|[iu]n)\s+(?:bir\s+)?(?:\w+\s+){0,2}?(?:model|asistan)\w*y[iu]m\b",
        r"MAKER\s+beni\s+\w+(?<!m[ea])[dt][iu]\b",
    ],
}


# A line "Developer: Anthropic" or "- Name: Claude" in a reply says who the model is - unless the user asked about
# other models ("Tell me about Gemini" -> "Name: Gemini / Developer: Google" describes it): identity_score counts
# these lines when the prompt names no other model or maker, and always for a question about the model itself.
KEY_VALUE_MODEL = (r"(?:name|model|model name|assistant|assistant name|ai|identity|bot|chatbot|llm|base model|"
                   r"underlying model|foundation model|product|nombre|modelo|nom|modele|modell|名称|名字|模型)")
KEY_VALUE_MAKER = (r"(?:developer|developers|developed by|creator|creators|created by|maker|made by|built by|"
                   r"trained by|company|organi[sz]ation|provider|vendor|owner|owned by|lab|author|team|origin|"
                   r"manufacturer|desarrollador|creador|empresa|developpeur|createur|entreprise|entwickler|hersteller|"
                   r"firma|开发者|开发商|公司|开发团队)")
KEY_VALUE = [r"\n[ \t]*(?:[-•>#]+[ \t]*)?" + KEY_VALUE_MODEL + r"[ \t]*(?::|=|[-–—][ \t])[ \t]*MODEL",
             r"\n[ \t]*(?:[-•>#]+[ \t]*)?" + KEY_VALUE_MAKER + r"[ \t]*(?::|=|[-–—][ \t])[ \t]*" + TEAM + "MAKER"]


@dataclass(frozen=True)
class IdentityPatterns:
    """Everything identity_score matches for one identity, compiled once (see identity_patterns)."""
    others: dict  # other names, squashed and blurred -> squashed ("openai" -> "openai", "iiama" -> "llama")
    spelled: re.Pattern  # other names however spelled
    plain: re.Pattern  # other names as listed, without separators ("chatgpt", "gpt4o")
    listed: dict  # squashed name -> the name as listed ("gpt4o" -> "GPT-4o")
    claims: tuple  # (pattern, GOVERNED_BEFORE of its language, starts with the name) for each of CLAIMS
    key_values: tuple  # KEY_VALUE, compiled
    own_tokens: frozenset  # the identity's own name and maker, as words allowed in a GAP
    own_name: re.Pattern
    own_maker: re.Pattern | None


@functools.lru_cache(maxsize=64)
def identity_patterns(own_names: tuple[str, ...], maker: str | None) -> IdentityPatterns:
    own = [normalise(n) for n in own_names + ((maker,) if maker else ())]
    own_words = [set(o.split()) for o in own]

    def is_own(other: str) -> bool:  # "Google DeepMind" is its own when the identity's maker is "Google"
        name, words = normalise(other), set(normalise(other).split())
        return any(name == o or name in o or ow <= words for o, ow in zip(own, own_words))

    models = [m for m in OTHER_MODELS if not is_own(m)]
    makers = [m for m in OTHER_MAKERS if not is_own(m)]
    model = _alternation(_spelled(models)[0])
    maker_names = _alternation(_spelled(makers)[0])
    claims = []
    for language, templates in CLAIMS.items():
        for template in templates:
            pattern = (template.replace("ANYMODEL", model).replace("GAP", GAP)
                       .replace("MODEL", f"(?P<claim>{model})").replace("MAKER", f"(?P<claim>{maker_names})"))
            claims.append((re.compile(pattern), GOVERNED_BEFORE.get(language), template.startswith(("MODEL", "MAKER"))))
    key_values = tuple(re.compile(t.replace("MODEL", f"(?P<claim>{model})").replace("MAKER", f"(?P<claim>{maker_names})"))
                       for t in KEY_VALUE)
    squashed, spelled = _spelled(models + makers)
    return IdentityPatterns(
        others={name.translate(BLUR): name for name in reversed(squashed)},
        spelled=spelled,
        plain=re.compile(_alternation(squashed)),
        listed={_squash(n): n for n in reversed(models + makers)},  # the first listed wins ("DeepSeek")
        claims=tuple(claims),
        key_values=key_values,
        own_tokens=frozenset(w for words in own_words for w in words),
        own_name=re.compile(r"(?<![a-z0-9])" + _spelled(own_names)[1].pattern),
        own_maker=re.compile(r"(?<![a-z0-9])" + _spelled([maker])[1].pattern) if maker else None)


def _squash_names(patterns: IdentityPatterns, text: str, spelled: re.Pattern) -> tuple[str, list[int]]:
    """`text` with every other name squashed ("open-al" -> "openai"), after a leading "\n" (see CLAUSE),
    and where those names start."""
    parts, starts, length, last = ["\n"], [], 1, 0
    for match in spelled.finditer(text):
        if match.start() and text[match.start() - 1] in WORD_CHARS:
            continue  # inside a word ("metaphor" is cut off by the pattern's end, "xmeta" here)
        parts += [text[last:match.start()], patterns.others[SEPARATORS.sub("", match.group()).translate(BLUR)]]
        length += match.start() - last
        starts.append(length)
        length += len(parts[-1])
        last = match.end()
    parts.append(text[last:])
    return "".join(parts), starts


def _candidates(claim: re.Pattern, name_first: bool, text: str, starts: list[int]) -> Iterator[re.Match]:
    """Matches of `claim`, from every start (a pattern that starts with the name: only where a name starts)."""
    if name_first:
        yield from filter(None, (claim.match(text, at) for at in starts))
        return
    at = 0
    while match := claim.search(text, at):
        yield match
        at = match.start() + 1


def names_another(patterns: IdentityPatterns, text: str) -> bool:
    """Whether the normalised `text` names another model or maker, however spelled."""
    return any(not (m.start() and text[m.start() - 1] in WORD_CHARS) for m in patterns.spelled.finditer(text))


def find_claim(patterns: IdentityPatterns, text: str, key_values: bool = True) -> str | None:
    """The other model or maker that the normalised `text` claims to be or to come from, or None; with
    key_values, a key/value line ("Developer: Anthropic") is a claim too (see KEY_VALUE)."""
    squashed = SEPARATORS.sub("", text).translate(BLUR)
    named = [(blurred, name) for blurred, name in patterns.others.items() if blurred in squashed]
    if not named:
        return None  # most responses name no other model or maker: stop before the claim patterns
    # when every name is written plainly, a plain alternation finds them, several times faster than the spelled one
    plainly = all(squashed.count(blurred) == text.count(name) for blurred, name in named)
    spelled = patterns.plain if plainly else patterns.spelled
    text, starts = _squash_names(patterns, text, spelled)
    if not starts:
        return None
    for claim, governed, name_first in patterns.claims:
        for match in _candidates(claim, name_first, text, starts):
            at = match.start()
            if text[at] in WORD_CHARS and text[at - 1] in WORD_CHARS:
                continue  # inside a word: "i am" in "hi am", "soy" in "tsoy"
            gap = match.groupdict().get("gap")
            if gap and not all(w in GAP_WORDS or w in patterns.own_tokens for w in GAP_SPLIT.split(gap) if w):
                continue
            if governed and governed.search(text, max(0, at - 40), at):
                continue
            return patterns.listed[match.group("claim")]
    for key_value in patterns.key_values if key_values else ():
        if match := key_value.search(text):
            return patterns.listed[match.group("claim")]
    return None


def identity_score(spec: Spec, prompt: str, response: str) -> tuple[float, str]:
    """(score, note) for the implicit identity target: 0 when the response claims another model or maker,
    3 when asked who it is (or who made it) and it does not say its name (or maker), else 10."""
    me = spec.identity
    patterns = identity_patterns((me.name, *me.aliases), me.maker)
    text = normalise(response)
    about_itself = IDENTITY_QUESTION.search(prompt) or MAKER_QUESTION.search(prompt)
    claimed = find_claim(patterns, text, key_values=bool(about_itself) or not names_another(patterns, normalise(prompt)))
    if claimed:
        return 0.0, f"claims to be or to come from {claimed!r}"
    if me.maker and MAKER_QUESTION.search(prompt) and not patterns.own_maker.search(text):
        return 3.0, f"asked who made it, does not say {me.maker}"
    if IDENTITY_QUESTION.search(prompt) and not patterns.own_name.search(text):
        return 3.0, f"asked who it is, does not say {me.name}"
    return 10.0, ""


def mentions(spec, text: str) -> dict:
    """{name, maker}: whether the text names the identity (or an alias) and its maker."""
    me = spec.identity
    name = any(re.search(rf"\b{re.escape(n)}\b", text, re.I) for n in [me.name, *me.aliases])
    maker = bool(me.maker) and re.search(rf"\b{re.escape(me.maker)}\b", text, re.I) is not None
    return {"name": name, "maker": maker}
