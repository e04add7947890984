"""Realistic identities: Chongqing district codes, GB/T 4754 industries, valid USCC and ID numbers.

Everything is drawn from a ``random.Random`` so a seed reproduces the same population.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from collections.abc import Callable

from streams.core.identifiers import id_check_digit, uscc_check_digit

# 重庆市 districts and counties (GB/T 2260): code → name
CHONGQING_DISTRICTS = {
    "500101": "万州区", "500102": "涪陵区", "500103": "渝中区", "500104": "大渡口区", "500105": "江北区",
    "500106": "沙坪坝区", "500107": "九龙坡区", "500108": "南岸区", "500109": "北碚区", "500110": "綦江区",
    "500111": "大足区", "500112": "渝北区", "500113": "巴南区", "500114": "黔江区", "500115": "长寿区",
    "500116": "江津区", "500117": "合川区", "500118": "永川区", "500119": "南川区", "500120": "璧山区",
    "500151": "铜梁区", "500152": "潼南区", "500153": "荣昌区", "500154": "开州区", "500155": "梁平区",
    "500156": "武隆区", "500229": "城口县", "500230": "丰都县", "500231": "垫江县", "500233": "忠县",
    "500235": "云阳县", "500236": "奉节县", "500237": "巫山县", "500238": "巫溪县",
    "500240": "石柱土家族自治县", "500241": "秀山土家族苗族自治县", "500242": "酉阳土家族苗族自治县",
    "500243": "彭水苗族土家族自治县",
}
# The main urban districts hold most registrations.
_DISTRICT_WEIGHTS = {code: (6 if code in ("500103", "500105", "500106", "500107", "500108", "500112") else 1)
                     for code in CHONGQING_DISTRICTS}

# GB/T 4754-2017 classes (门类 letter + 4-digit class) common among Chongqing SMEs.
INDUSTRIES = {
    "C3670": "汽车零部件及配件制造", "C3912": "计算机零部件制造", "C3982": "电子电路制造",
    "C1469": "其他调味品、发酵制品制造", "C1391": "淀粉及淀粉制品制造", "C3311": "金属结构制造",
    "E4710": "住宅房屋建筑", "F5123": "果品、蔬菜批发", "F5261": "汽车新车零售",
    "G5431": "普通货物道路运输", "H6110": "旅游饭店", "H6210": "正餐服务",
    "I6513": "应用软件开发", "L7212": "投资与资产管理", "M7320": "工程和技术研究和试验发展",
    "O8010": "家庭服务",
}
_INDUSTRY_WEIGHTS = {"C3670": 4, "H6210": 5, "F5123": 4, "I6513": 3, "E4710": 2}

_ORG_ALPHABET = string.digits + string.ascii_uppercase
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_BODY = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # letters allowed in a USCC


def org_code_check(first8: str) -> str:
    """GB 11714 organisation-code check character."""
    total = sum(_ORG_ALPHABET.index(c) * w for c, w in zip(first8, _ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return {10: "X", 11: "0"}.get(c, str(c))


def pick_district(rng: random.Random) -> str:
    return rng.choices(list(_DISTRICT_WEIGHTS), weights=list(_DISTRICT_WEIGHTS.values()))[0]


def pick_industry(rng: random.Random) -> str:
    codes = list(INDUSTRIES)
    return rng.choices(codes, weights=[_INDUSTRY_WEIGHTS.get(c, 1) for c in codes])[0]


def make_uscc(rng: random.Random, district: str) -> str:
    """A USCC of a company (登记管理部门 9 = 工商, 类别 1 = 企业) registered in ``district``."""
    while True:
        # Since 2015 new organisation codes start with "MA" followed by 6 characters.
        body = "MA" + "".join(rng.choice(_ORG_BODY[:-1]) for _ in range(6))
        check = org_code_check(body)
        if check in _ORG_BODY:
            first17 = "91" + district + body + check
            return first17 + uscc_check_digit(first17)


def distinct_usccs(rng: random.Random, n: int, district: str) -> list[str]:
    """``n`` different USCCs of ``district``, in the order drawn."""
    out: list[str] = []
    while len(out) < n:
        code = make_uscc(rng, district)
        if code not in out:
            out.append(code)
    return out


def make_id_number(rng: random.Random, district: str, born_from: int = 1958, born_to: int = 2000) -> str:
    """A 居民身份证号 of a person born in ``district`` with a valid MOD 11-2 check digit."""
    start = dt.date(born_from, 1, 1).toordinal()
    birth = dt.date.fromordinal(rng.randint(start, dt.date(born_to, 12, 31).toordinal()))
    first17 = f"{district}{birth:%Y%m%d}{rng.randint(0, 999):03d}"
    return first17 + id_check_digit(first17)


def make_mobile(rng: random.Random) -> str:
    prefix = rng.choice(["134", "135", "136", "138", "139", "150", "151", "158", "177", "180", "186", "187", "189", "199"])
    return prefix + f"{rng.randint(0, 99_999_999):08d}"


class UniqueCodes:
    """Codes (meter accounts, application and certificate numbers) unique within one population.

    Random codes collide at scale — a million power accounts drawn from 10⁸ numbers share about
    five thousand, and the second enterprise's bills would overwrite the first's. A code already
    issued is drawn again from the same generator, so a population without collisions gets
    exactly the codes it got before.
    """

    def __init__(self) -> None:
        self._issued: set[str] = set()

    def draw(self, make: Callable[[], str]) -> str:
        """``make()`` until it gives a code not issued yet; that code is issued."""
        code = make()
        while code in self._issued:
            code = make()
        self._issued.add(code)
        return code

    def draw_digits(self, rng: random.Random, prefix: str, digits: int, suffix: str = "") -> str:
        """``draw`` of ``prefix`` + ``digits`` random decimal digits (``rng.randint``) + ``suffix``."""
        return self.draw(lambda: f"{prefix}{rng.randint(0, 10 ** digits - 1):0{digits}d}{suffix}")

    def __len__(self) -> int:
        return len(self._issued)
