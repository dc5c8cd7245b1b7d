"""Sample texts by kind (English, code, non-Latin scripts) for estimate and calibration checks.

Used by the tests and by ``benchmarks/bench_counting.py``.
"""

from __future__ import annotations

__all__ = ["SAMPLES", "conversation_of"]

ENGLISH = [
    "The committee met on Tuesday to review the budget for the coming fiscal year. "
    "After a long discussion, members agreed to postpone the vote until the auditors "
    "had finished their report, which is expected by the end of the month.",
    "Photosynthesis converts light energy into chemical energy stored in glucose. "
    "Chlorophyll absorbs mostly blue and red light, reflecting green, which is why "
    "leaves look green to us. Water and carbon dioxide are consumed; oxygen is released.",
    "I'm not sure we'll make it on time, but let's try: the train leaves at 6:45 and "
    "the station is twenty minutes away if traffic isn't terrible. Don't forget the "
    "tickets, they're on the kitchen table next to the keys!",
    "Rate limiting protects shared services from bursts of traffic. A sliding window "
    "counts the requests made in the last minute; a token bucket refills continuously. "
    "Clients that respect the limits avoid errors and retries, and everyone benefits.",
    "In 1969, the Apollo 11 mission landed the first humans on the Moon. Neil Armstrong "
    "and Buzz Aldrin spent about two and a quarter hours outside the spacecraft, while "
    "Michael Collins orbited above in the command module Columbia.",
    "Please summarize the following customer feedback in three bullet points, keeping "
    "the tone neutral and mentioning any request for a refund or an exchange explicitly.",
    "Good morning! Could you help me plan a three-day trip to Lisbon in early October? "
    "I like museums, long walks, seafood, and I'd rather avoid very crowded places.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor "
    "jugs. How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.",
]

CODE = [
    "def fibonacci(n: int) -> list[int]:\n    a, b = 0, 1\n    out = []\n    for _ in "
    "range(n):\n        out.append(a)\n        a, b = b, a + b\n    return out\n",
    "SELECT c.name, COUNT(o.id) AS orders\nFROM customers c\nLEFT JOIN orders o ON "
    "o.customer_id = c.id\nWHERE o.created_at >= '2024-01-01'\nGROUP BY c.name\n"
    "ORDER BY orders DESC\nLIMIT 10;\n",
    "const debounce = (fn, ms = 300) => {\n  let t;\n  return (...args) => {\n    "
    "clearTimeout(t);\n    t = setTimeout(() => fn.apply(this, args), ms);\n  };\n};\n",
    '{\n  "model": "llama-3.1-8b-instant",\n  "messages": [\n    {"role": "user", '
    '"content": "Hello"}\n  ],\n  "max_tokens": 256,\n  "temperature": 0.2\n}\n',
    "#include <stdio.h>\n\nint main(void) {\n    for (int i = 0; i < 10; ++i) {\n"
    '        printf("%d\\n", i * i);\n    }\n    return 0;\n}\n',
    "class LRU:\n    def __init__(self, size):\n        self.size = size\n        "
    "self.data = {}\n\n    def get(self, key):\n        value = self.data.pop(key)\n"
    "        self.data[key] = value\n        return value\n",
    "fn main() {\n    let v: Vec<u64> = (1..=20).filter(|x| x % 3 == 0).collect();\n"
    '    println!("{:?} sum={}", v, v.iter().sum::<u64>());\n}\n',
    "git checkout -b fix/rate-limit && pytest -q tests/ -k 'limiter and not redis' "
    "--maxfail=1 && git commit -am 'Fix off-by-one in window arithmetic'\n",
]

CYRILLIC = [
    "Комитет собрался во вторник, чтобы рассмотреть бюджет на следующий финансовый год. "
    "После долгого обсуждения члены комитета решили отложить голосование.",
    "Фотосинтез превращает энергию света в химическую энергию, запасённую в глюкозе. "
    "Хлорофилл поглощает в основном синий и красный свет.",
    "Доброе утро! Не могли бы вы помочь мне спланировать трёхдневную поездку в Лиссабон "
    "в начале октября? Я люблю музеи, долгие прогулки и морепродукты.",
    "Ограничение частоты запросов защищает общие сервисы от всплесков нагрузки. "
    "Скользящее окно считает запросы за последнюю минуту.",
]

CJK = [
    "委员会于周二开会审议下一财政年度的预算。经过长时间的讨论，成员们同意推迟投票，"
    "直到审计人员完成他们的报告，预计将在月底前完成。",
    "光合作用将光能转化为储存在葡萄糖中的化学能。叶绿素主要吸收蓝光和红光，反射绿光，"
    "这就是为什么叶子在我们看来是绿色的。",
    "おはようございます。十月の初めにリスボンへの三日間の旅行を計画するのを手伝って"
    "いただけますか。美術館と散歩と魚介料理が好きです。",
    "速率限制可以保护共享服务免受突发流量的影响。滑动窗口统计最近一分钟内的请求数量；"
    "令牌桶则持续补充。",
]

DEVANAGARI = [
    "समिति ने अगले वित्तीय वर्ष के बजट की समीक्षा के लिए मंगलवार को बैठक की। लंबी चर्चा के "
    "बाद सदस्यों ने मतदान को तब तक स्थगित करने पर सहमति व्यक्त की।",
    "प्रकाश संश्लेषण प्रकाश ऊर्जा को ग्लूकोज में संग्रहीत रासायनिक ऊर्जा में बदलता है। "
    "क्लोरोफिल मुख्य रूप से नीले और लाल प्रकाश को अवशोषित करता है।",
    "सुप्रभात! क्या आप अक्टूबर की शुरुआत में लिस्बन की तीन दिन की यात्रा की योजना बनाने में "
    "मेरी मदद कर सकते हैं? मुझे संग्रहालय और लंबी सैर पसंद है।",
    "दर सीमित करना साझा सेवाओं को अचानक आने वाले ट्रैफ़िक से बचाता है। स्लाइडिंग विंडो "
    "पिछले एक मिनट में किए गए अनुरोधों की गिनती करती है।",
]

SAMPLES: dict[str, list[str]] = {
    "english": ENGLISH,
    "code": CODE,
    "cyrillic": CYRILLIC,
    "cjk": CJK,
    "devanagari": DEVANAGARI,
}


def conversation_of(texts: list[str], start: int, size: int) -> list[dict[str, str]]:
    """``size`` alternating user/assistant messages cycling through ``texts`` from ``start``."""
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": texts[(start + i) % len(texts)]} for i in range(size)]
